// A job executor with one handler.
package main

import (
	"context"
	"fmt"

	"github.com/tangram-dev/tangram/job"
)

func main() {
	ex, err := job.NewExecutor(job.ExecutorConfig{Servers: []string{"127.0.0.1:7071"}, App: "demo", Insecure: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	ex.Handle("hello", func(ctx context.Context, jc *job.Context) error { return nil })
	if err := ex.Start(context.Background()); err != nil {
		fmt.Println(err)
	}
	ex.Close()
}
