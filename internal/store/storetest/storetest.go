// Package storetest opens fresh, isolated Tangram stores for tests: a new
// SQLite file, or a new database on the PostgreSQL or MariaDB server named by
// TANGRAM_TEST_POSTGRES / TANGRAM_TEST_MYSQL (defaults: the local standard
// ports). A test that needs a server it cannot reach fails and says how to
// start it; it never passes silently.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/store"
)

// Default server addresses used when the environment names none.
const (
	DefaultPostgres = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	DefaultMySQL    = "mysql://root@127.0.0.1:3306/test"
)

// Dialects lists the dialects the shared suites run against.
var Dialects = []store.Dialect{store.SQLite, store.Postgres, store.MySQL}

// PostgresURL returns the PostgreSQL server URL for tests.
func PostgresURL() string {
	if v := os.Getenv("TANGRAM_TEST_POSTGRES"); v != "" {
		return v
	}
	return DefaultPostgres
}

// MySQLURL returns the MySQL/MariaDB server URL for tests.
func MySQLURL() string {
	if v := os.Getenv("TANGRAM_TEST_MYSQL"); v != "" {
		return v
	}
	return DefaultMySQL
}

func randName() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "tgt_" + hex.EncodeToString(b)
}

// DSN creates a fresh empty database of the dialect and returns its store
// URL; the database is dropped when the test ends.
func DSN(t testing.TB, d store.Dialect) string {
	t.Helper()
	switch d {
	case store.SQLite:
		return "sqlite://" + filepath.Join(t.TempDir(), "tangram.db")
	case store.Postgres:
		base := PostgresURL()
		admin, err := sql.Open("pgx", base)
		if err != nil {
			t.Fatalf("storetest: %v", err)
		}
		name := randName()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
			admin.Close()
			t.Fatalf("storetest: PostgreSQL at %s is not reachable (%v); start it with scripts/services.sh or set TANGRAM_TEST_POSTGRES", base, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			_, _ = admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			admin.Close()
		})
		u, _ := url.Parse(base)
		u.Path = "/" + name
		return u.String()
	case store.MySQL:
		base := MySQLURL()
		u, err := url.Parse(base)
		if err != nil {
			t.Fatalf("storetest: bad TANGRAM_TEST_MYSQL: %v", err)
		}
		pass, _ := u.User.Password()
		admin, err := sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(%s)/%s", u.User.Username(), pass, u.Host, strings.TrimPrefix(u.Path, "/")))
		if err != nil {
			t.Fatalf("storetest: %v", err)
		}
		name := randName()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name+" CHARACTER SET utf8mb4"); err != nil {
			admin.Close()
			t.Fatalf("storetest: MariaDB/MySQL at %s is not reachable (%v); start it with scripts/services.sh or set TANGRAM_TEST_MYSQL", base, err)
		}
		t.Cleanup(func() {
			_, _ = admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name)
			admin.Close()
		})
		u.Path = "/" + name
		return u.String()
	}
	t.Fatalf("storetest: unknown dialect %q", d)
	return ""
}

// Open opens a store on a fresh database of the dialect, closed and dropped
// when the test ends.
func Open(t testing.TB, d store.Dialect) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), store.Config{DSN: DSN(t, d)})
	if err != nil {
		t.Fatalf("storetest: open %s: %v", d, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
