// Package shardtest creates fresh MariaDB databases for the sharding
// layer's tests (dropped when the test ends).
package shardtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // the test databases' driver

	"github.com/tangram-dev/tangram/config"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/internal/wait"
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

// Replication is a MariaDB primary and its replica, each a mariadbd of
// the test's own (in a temporary directory, on a free loopback port),
// replicating by GTID; stopped when the test ends.
type Replication struct {
	Primary, Replica *sql.DB
	// PrimaryURL and ReplicaURL are the mysql:// URLs of database test
	// on each (rules name data sources by them).
	PrimaryURL, ReplicaURL string
}

// Replicated starts a primary and a replica of it (about two seconds
// each: mariadb-install-db, then mariadbd), creates database test on
// the primary and waits until the replica has it.
func Replicated(t testing.TB) *Replication {
	t.Helper()
	if _, err := exec.LookPath("mariadb-install-db"); err != nil {
		t.Fatalf("mariadb-install-db is not installed (apt-get install mariadb-server; scripts/services.sh does it): %v", err)
	}
	primary, pURL := startMariaDB(t, 1)
	replica, rURL := startMariaDB(t, 2)
	pu, err := url.Parse(pURL)
	if err != nil {
		t.Fatal(err)
	}
	host, port := pu.Hostname(), pu.Port()
	for _, q := range []string{
		fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='%s', MASTER_PORT=%s, MASTER_USER='root', MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1", host, port),
		"START SLAVE",
	} {
		if _, err := replica.Exec(q); err != nil {
			t.Fatalf("replica: %s: %v", q, err)
		}
	}
	if _, err := primary.Exec("CREATE DATABASE test"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "the replica to replicate CREATE DATABASE test", func() bool {
		var n int
		err := replica.QueryRow("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'test'").Scan(&n)
		return err == nil && n == 1
	})
	open := func(u string) *sql.DB {
		db, err := sql.Open("mysql", dsnOf(u))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	return &Replication{Primary: open(pURL + "test"), Replica: open(rURL + "test"), PrimaryURL: pURL + "test", ReplicaURL: rURL + "test"}
}

// dsnOf turns mysql://user@host:port/db into go-sql-driver's DSN.
func dsnOf(u string) string {
	rest := strings.TrimPrefix(u, "mysql://")
	cred, hostdb, _ := strings.Cut(rest, "@")
	host, db, _ := strings.Cut(hostdb, "/")
	return fmt.Sprintf("%s@tcp(%s)/%s", cred, host, db)
}

// startMariaDB runs a mariadbd of its own with binary logs on and
// returns a connection (no database) and its URL up to the database
// name (mysql://root@127.0.0.1:port/).
func startMariaDB(t testing.TB, id int) (*sql.DB, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "tgmaria-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data := filepath.Join(dir, "data")
	install := exec.Command("mariadb-install-db", "--no-defaults", "--datadir="+data, "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command("/usr/sbin/mariadbd", "--no-defaults", "--datadir="+data, "--user=root", "--bind-address=127.0.0.1",
		fmt.Sprintf("--port=%d", port), "--socket="+filepath.Join(dir, "sock"), "--pid-file="+filepath.Join(dir, "pid"),
		fmt.Sprintf("--server-id=%d", id), "--log-bin="+filepath.Join(dir, "bin"), "--skip-name-resolve",
		"--innodb-buffer-pool-size=16M", "--skip-log-error", "--log-error="+filepath.Join(dir, "err.log"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	sock := filepath.Join(dir, "sock")
	admin, err := sql.Open("mysql", "root@unix("+sock+")/")
	if err != nil {
		t.Fatal(err)
	}
	var exitErr error
	up := wait.Until(30*time.Second, func() bool {
		select {
		case exitErr = <-exited:
			exited <- exitErr
			return true
		default:
		}
		return admin.Ping() == nil
	})
	if !up || exitErr != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "err.log"))
		t.Fatalf("mariadbd did not answer within 30 s (exit: %v)\n%s", exitErr, b)
	}
	// root over TCP from loopback, without a password.
	for _, q := range []string{"CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''", "GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION"} {
		if _, err := admin.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	admin.Close()
	u := fmt.Sprintf("mysql://root@127.0.0.1:%d/", port)
	db, err := sql.Open("mysql", dsnOf(u))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, u
}

// Line prints a row's values as the differential tests compare them:
// separated by "|", NULL for nil, bytes as text.
func Line(vals []any) string {
	f := make([]string, len(vals))
	for i, v := range vals {
		switch x := v.(type) {
		case nil:
			f[i] = "NULL"
		case []byte:
			f[i] = string(x)
		default:
			f[i] = fmt.Sprint(v)
		}
	}
	return strings.Join(f, "|")
}

// Lines reads rows whole (and closes them): their columns and a Line per
// row.
func Lines(rows *sql.Rows) (cols, lines []string, err error) {
	defer rows.Close()
	if cols, err = rows.Columns(); err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, nil, err
		}
		lines = append(lines, Line(vals))
	}
	return cols, lines, rows.Err()
}

// PublishRules releases doc as the content of yaml namespace ns of app
// (env dev, cluster default) on the server at url, creating the app and
// the namespace the first time.
func PublishRules(t testing.TB, url, token, app, ns, doc string) {
	t.Helper()
	ctx := context.Background()
	admin := config.NewAdmin(url, token)
	if _, err := admin.CreateApp(ctx, config.App{Name: app}); err != nil && !errors.Is(err, config.ErrExists) {
		t.Fatal(err)
	}
	co := config.Coord{Env: "dev", App: app, Cluster: config.DefaultCluster, NS: ns}
	if _, err := admin.Namespace(ctx, co); errors.Is(err, config.ErrNotFound) {
		if _, err := admin.CreateNamespace(ctx, co.Env, co.App, co.Cluster, config.NamespaceSpec{Name: ns, Format: "yaml"}); err != nil {
			t.Fatal(err)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.SetItem(ctx, co, config.ContentKey, config.ItemEdit{Value: doc}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Publish(ctx, co, config.PublishRequest{Comment: "rules"}); err != nil {
		t.Fatal(err)
	}
}
