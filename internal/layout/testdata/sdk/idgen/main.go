// Snowflake IDs in the Seed layout, decoded back.
package main

import (
	"fmt"

	"github.com/tangram-dev/tangram/idgen"
)

func main() {
	g, err := idgen.NewSnowflake(idgen.Config{Layout: idgen.Seed(), Fixed: map[string]int64{"machine": 1}, PerID: []string{"type", "db", "table"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	id, _ := g.NextFor(2, 3, 9)
	d, _ := idgen.Seed().Decode(id)
	fmt.Println(id, d.Time)
}
