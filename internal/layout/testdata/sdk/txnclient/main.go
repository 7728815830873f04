// A service that starts global transactions and serves TCC/Saga branches
// behind the barrier: the txn SDK alone.
package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"

	"github.com/tangram-dev/tangram/txn"
)

func main() {
	c, err := txn.Dial(context.Background(), txn.Config{Servers: []string{"127.0.0.1:7071"}, App: "demo"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	bar := &txn.Barrier{Dialect: "mysql"}
	http.HandleFunc("POST /debit", func(w http.ResponseWriter, r *http.Request) {
		bi, err := txn.BranchFromRequest(r)
		if err == nil {
			err = bar.Call(r.Context(), bi, func(tx *sql.Tx) error { return nil })
		}
		txn.WriteResult(w, err)
	})
	g, err := c.NewSaga(txn.Options{}).Add("http://127.0.0.1:8081/debit", "http://127.0.0.1:8081/debit-undo", nil).Submit(context.Background(), true)
	fmt.Println(g.Status, err)
}
