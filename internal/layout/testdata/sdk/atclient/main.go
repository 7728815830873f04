// A service whose local transactions are AT-mode branches of global
// transactions: the txn SDK and txn/at (which carries the SQL parser; a
// real service adds its database driver).
package main

import (
	"context"
	"fmt"
	"net/http"

	"github.com/tangram-dev/tangram/txn"
	"github.com/tangram-dev/tangram/txn/at"
)

func main() {
	c, err := txn.Dial(context.Background(), txn.Config{Servers: []string{"127.0.0.1:7071"}, App: "demo"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	db, err := at.Open("mysql", "root@tcp(127.0.0.1:3306)/test", at.Config{Coordinator: c, Resource: "demo-db", URL: "http://127.0.0.1:8081/at"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	http.Handle("POST /at", db.Handler())
	http.Handle("POST /pay", txn.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := db.ExecContext(r.Context(), "UPDATE accounts SET balance = balance - ? WHERE id = ?", 10, "alice")
		txn.WriteResult(w, err)
	})))
}
