// Package shardtest creates fresh MariaDB databases for the sharding
// layer's tests (dropped when the test ends).
package shardtest

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"testing"

	_ "github.com/go-sql-driver/mysql" // the test databases' driver

	"github.com/tangram-dev/tangram/internal/store/storetest"
)

// Databases creates n fresh databases on the test MariaDB (TANGRAM_TEST_MYSQL,
// else root on 127.0.0.1:3306), runs ddl in each, and returns their pools
// and their URLs (mysql://…, as rules name data sources), in order.
func Databases(t testing.TB, n int, ddl ...string) ([]*sql.DB, []string) {
	t.Helper()
	u, err := url.Parse(storetest.MySQLURL())
	if err != nil {
		t.Fatal(err)
	}
	pass, _ := u.User.Password()
	cred := u.User.Username()
	if pass != "" {
		cred += ":" + pass
	}
	admin, err := sql.Open("mysql", fmt.Sprintf("%s@tcp(%s)/", cred, u.Host))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	prefix := "tgshard_" + hex.EncodeToString(b)
	var dbs []*sql.DB
	var urls []string
	for i := range n {
		name := fmt.Sprintf("%s_%d", prefix, i)
		if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
			t.Fatalf("MariaDB at %s: %v (start it with scripts/services.sh)", u.Host, err)
		}
		t.Cleanup(func() { _, _ = admin.Exec("DROP DATABASE IF EXISTS " + name) })
		db, err := sql.Open("mysql", fmt.Sprintf("%s@tcp(%s)/%s", cred, u.Host, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		for _, d := range ddl {
			if _, err := db.Exec(d); err != nil {
				t.Fatalf("%s: %v", d, err)
			}
		}
		dbs = append(dbs, db)
		urls = append(urls, fmt.Sprintf("mysql://%s@%s/%s", cred, u.Host, name))
	}
	return dbs, urls
}
