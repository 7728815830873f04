// A service that routes its statements over sharding rules: the shard SDK
// (which carries the SQL parser).
package main

import (
	"fmt"

	"github.com/tangram-dev/tangram/shard"
)

func main() {
	r, err := shard.ParseRules([]byte("dataSources: {ds_0: 'mysql://root@127.0.0.1:3306/shop_0'}\ndefaultDataSource: ds_0\n"))
	if err != nil {
		fmt.Println(err)
		return
	}
	rd, err := shard.NewRouter(r).Route("SELECT * FROM t_user WHERE id = ?", []any{1})
	fmt.Println(rd, err)
}
