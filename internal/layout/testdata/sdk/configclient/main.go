// A service that reads its configuration: the config client SDK alone.
package main

import (
	"context"
	"fmt"

	"github.com/tangram-dev/tangram/config"
)

func main() {
	cl, err := config.NewClient(context.Background(), config.ClientConfig{Servers: []string{"http://127.0.0.1:7070"}, App: "demo", Env: "dev"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cl.Close()
	fmt.Println(cl.String("greeting", "hello"))
}
