package proxy_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/shard"
	"github.com/tangram-dev/tangram/shard/proxy"
	"github.com/tangram-dev/tangram/shard/shardtest"
	"github.com/tangram-dev/tangram/shard/sqldriver"
)

// accountDDL is the table, sharded over two databases (two tables each)
// and unsharded in the reference database.
const accountDDL = `CREATE TABLE %s (
	id BIGINT PRIMARY KEY,
	owner VARCHAR(20) NOT NULL,
	branch INT NOT NULL,
	balance DECIMAL(12,2) NOT NULL,
	rate DOUBLE,
	score INT UNSIGNED,
	opened DATETIME(3) NOT NULL,
	born DATE,
	alarm TIME,
	note TEXT,
	photo BLOB)`

type fixture struct {
	addr  string
	srv   *proxy.Server
	pools []*sql.DB // the data sources
	ref   *sql.DB   // one unsharded database with the same rows
}

// start makes two sharded MariaDB databases and one reference database,
// and serves the sharded ones through a proxy on 127.0.0.1:0.
func start(t *testing.T, cfg proxy.Config) *fixture {
	t.Helper()
	var ddl []string
	for j := range 2 {
		ddl = append(ddl, fmt.Sprintf(accountDDL, fmt.Sprintf("t_account_%d", j)))
	}
	ddl = append(ddl, "CREATE TABLE t_currency (code CHAR(3) PRIMARY KEY, name VARCHAR(40) NOT NULL)")
	pools, urls := shardtest.Databases(t, 2, ddl...)
	refs, _ := shardtest.Databases(t, 1, fmt.Sprintf(accountDDL, "t_account"),
		"CREATE TABLE t_currency (code CHAR(3) PRIMARY KEY, name VARCHAR(40) NOT NULL)")
	r, err := shard.ParseRules([]byte(fmt.Sprintf(`dataSources:
  ds_0: %s
  ds_1: %s
tables:
  t_account:
    actualDataNodes: ds_${0..1}.t_account_${0..1}
    databaseStrategy: {standard: {shardingColumn: id, shardingAlgorithmName: by_id}}
    tableStrategy: {standard: {shardingColumn: id, shardingAlgorithmName: by_half}}
broadcastTables: [t_currency]
shardingAlgorithms:
  by_id: {type: MOD, props: {sharding-count: 2}}
  by_half: {type: INLINE, props: {algorithm-expression: "t_account_${id / 2 %% 2}", allow-range-query-with-inline-sharding: true}}
`, urls[0], urls[1])))
	if err != nil {
		t.Fatal(err)
	}
	f := serve(t, r, cfg)
	f.pools, f.ref = pools, refs[0]
	return f
}

// serve serves rules r through a proxy on 127.0.0.1:0.
func serve(t *testing.T, r *shard.Rules, cfg proxy.Config) *fixture {
	t.Helper()
	dbs, err := sqldriver.OpenDataSources(r, 8)
	if err != nil {
		t.Fatal(err)
	}
	for _, db := range dbs {
		t.Cleanup(func() { db.Close() })
	}
	if cfg.Users == nil {
		cfg.Users = map[string]string{"app": "secret"}
	}
	srv, err := proxy.NewServer(r, dbs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, proxy.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return &fixture{addr: ln.Addr().String(), srv: srv}
}

// client opens go-sql-driver/mysql on the proxy.
func (f *fixture) client(t *testing.T, params string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", "app:secret@tcp("+f.addr+")/sharding_db?"+params)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// both runs a statement on the proxy and on the reference database.
func both(t *testing.T, ctx context.Context, p, ref *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := p.ExecContext(ctx, q, args...); err != nil {
		t.Fatalf("proxy: %s: %v", q, err)
	}
	if _, err := ref.ExecContext(ctx, q, args...); err != nil {
		t.Fatalf("reference: %s: %v", q, err)
	}
}

// rows reads a result whole, each value printed with its Go type.
func rows(ctx context.Context, db *sql.DB, q string, args ...any) (string, error) {
	rs, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return "", err
	}
	defer rs.Close()
	cols, err := rs.Columns()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintln(&b, strings.Join(cols, "|"))
	for rs.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			return "", err
		}
		for i, v := range vals {
			if i > 0 {
				b.WriteByte('|')
			}
			switch x := v.(type) {
			case []byte:
				fmt.Fprintf(&b, "bytes(%s)", x)
			case time.Time:
				fmt.Fprintf(&b, "time(%s)", x.Format(time.RFC3339Nano))
			default:
				fmt.Fprintf(&b, "%T(%v)", v, v)
			}
		}
		b.WriteByte('\n')
	}
	return b.String(), rs.Err()
}

// Every query answers through the proxy as the one unsharded database
// does, value for value and type for type, in the text protocol
// (interpolated parameters) and in the binary one (prepared statements).
func TestResultsMatchOneDatabase(t *testing.T) {
	f := start(t, proxy.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, mode := range []struct{ name, params string }{
		{"text", "parseTime=true&interpolateParams=true"},
		{"binary", "parseTime=true"},
		{"binary-raw-times", ""},
	} {
		t.Run(mode.name, func(t *testing.T) {
			p := f.client(t, mode.params)
			ref, err := sql.Open("mysql", refDSN(t, f.ref, mode.params))
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			both(t, ctx, p, ref, "DELETE FROM t_account WHERE id >= ?", 0)
			both(t, ctx, p, ref, "DELETE FROM t_currency")
			both(t, ctx, p, ref, "INSERT INTO t_currency (code, name) VALUES ('EUR', 'euro'), ('CNY', '人民币')")
			base := time.Date(2026, 12, 6, 9, 30, 15, 250_000_000, time.UTC)
			for id := range 12 {
				var rate, score, born, alarm, note, photo any
				if id%3 != 0 {
					rate = float64(id) / 7
					score = uint32(4_000_000_000 + id)
					born = time.Date(1990+id, time.Month(id+1), id+1, 0, 0, 0, 0, time.UTC)
					alarm = fmt.Sprintf("%02d:%02d:05", id, id*4)
					note = strings.Repeat("é", id)
					photo = []byte{0, byte(id), 0xff}
				}
				both(t, ctx, p, ref, "INSERT INTO t_account (id, owner, branch, balance, rate, score, opened, born, alarm, note, photo) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
					id, []string{"ann", "Bob", "ANN", "bob", "Cy"}[id%5], id%4, fmt.Sprintf("%d.%02d", id*100, id), rate, score, base.Add(time.Duration(id)*time.Hour), born, alarm, note, photo)
			}
			for _, q := range []struct {
				sql  string
				args []any
			}{
				{"SELECT * FROM t_account WHERE id = ?", []any{5}},
				{"SELECT * FROM t_account WHERE id = ?", []any{3}},
				{"SELECT id, owner, balance, rate, score, opened, born, alarm, note, photo FROM t_account ORDER BY id", nil},
				{"SELECT id, balance FROM t_account WHERE id IN (?, ?, ?) ORDER BY balance DESC", []any{1, 6, 11}},
				{"SELECT branch, COUNT(*), SUM(balance), MAX(rate), MIN(opened), MAX(alarm) FROM t_account GROUP BY branch ORDER BY branch", nil},
				{"SELECT branch, AVG(balance) FROM t_account GROUP BY branch ORDER BY 2 DESC", nil},
				{"SELECT id FROM t_account ORDER BY opened DESC LIMIT ?, ?", []any{2, 3}},
				{"SELECT DISTINCT branch FROM t_account ORDER BY branch", nil},
				// Text is ordered and grouped by the collation (which
				// folds case), as one database does.
				{"SELECT owner, id FROM t_account ORDER BY owner DESC, id", nil},
				{"SELECT id, owner FROM t_account ORDER BY owner, id DESC LIMIT ?, ?", []any{3, 4}},
				{"SELECT COUNT(*), MIN(id) FROM t_account GROUP BY owner ORDER BY MIN(id)", nil},
				{"SELECT DISTINCT LOWER(owner) FROM t_account ORDER BY 1", nil},
				{"SELECT id FROM t_account ORDER BY note, id", nil},
				{"SELECT COUNT(*) FROM t_account WHERE born IS NULL", nil},
				{"SELECT id, alarm FROM t_account WHERE alarm > ? ORDER BY id", []any{"03:00:00"}},
				{"SELECT a.id, c.name FROM t_account a JOIN t_currency c ON c.code = ? WHERE a.id = ?", []any{"CNY", 7}},
				{"SELECT code, name FROM t_currency ORDER BY code", nil},
				{"SELECT 1 + 1, 'x', NULL, 2.5", nil},
				{"SELECT id FROM t_account WHERE id = ?", []any{99}},
			} {
				want, err := rows(ctx, ref, q.sql, q.args...)
				if err != nil {
					t.Fatalf("reference: %s: %v", q.sql, err)
				}
				got, err := rows(ctx, p, q.sql, q.args...)
				if err != nil {
					t.Fatalf("proxy: %s: %v", q.sql, err)
				}
				if got != want {
					t.Errorf("%s %v\nproxy:\n%s\none database:\n%s", q.sql, q.args, got, want)
				}
			}
			var n int64
			res, err := p.ExecContext(ctx, "UPDATE t_account SET balance = balance + 1 WHERE owner = ?", "bob")
			if err != nil {
				t.Fatal(err)
			}
			if n, _ = res.RowsAffected(); n != 5 {
				t.Fatalf("UPDATE across shards affected %d rows, want 5 (Bob and bob)", n)
			}
		})
	}
}

// refDSN is the reference database's DSN with params.
func refDSN(t *testing.T, ref *sql.DB, params string) string {
	t.Helper()
	var name string
	if err := ref.QueryRow("SELECT DATABASE()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(storetest.MySQLURL())
	if err != nil {
		t.Fatal(err)
	}
	cfg := mysql.NewConfig()
	cfg.User = u.User.Username()
	cfg.Passwd, _ = u.User.Password()
	cfg.Net, cfg.Addr, cfg.DBName = "tcp", u.Host, name
	dsn := cfg.FormatDSN()
	if params == "" {
		return dsn
	}
	if strings.Contains(dsn, "?") {
		return dsn + "&" + params
	}
	return dsn + "?" + params
}

// Clients log in with either plugin the proxy proposes; a wrong password
// or an unknown database is refused with MySQL's own codes.
func TestLogin(t *testing.T) {
	for _, plugin := range []string{proxy.NativePassword, proxy.CachingSHA2Password} {
		t.Run(plugin, func(t *testing.T) {
			f := start(t, proxy.Config{AuthPlugin: plugin, Users: map[string]string{"app": "secret", "nopass": ""}})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for _, c := range []struct {
				dsn  string
				code uint16
			}{
				{"app:secret@tcp(%s)/sharding_db", 0},
				{"app:secret@tcp(%s)/", 0},
				{"nopass@tcp(%s)/sharding_db", 0},
				{"app:wrong@tcp(%s)/sharding_db", 1045},
				{"app@tcp(%s)/sharding_db", 1045},
				{"nobody:secret@tcp(%s)/sharding_db", 1045},
				{"app:secret@tcp(%s)/other_db", 1049},
			} {
				db, err := sql.Open("mysql", fmt.Sprintf(c.dsn, f.addr))
				if err != nil {
					t.Fatal(err)
				}
				err = db.PingContext(ctx)
				db.Close()
				var me *mysql.MySQLError
				switch {
				case c.code == 0 && err != nil:
					t.Errorf("%s: %v", c.dsn, err)
				case c.code != 0 && (!errors.As(err, &me) || me.Number != c.code):
					t.Errorf("%s: %v, want error %d", c.dsn, err, c.code)
				}
			}
		})
	}
}

// code is the MySQL error number of err (0 when it has none).
func code(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// A session's transaction holds its writes on every data source until
// COMMIT; ROLLBACK, a rolled-back sql.Tx and autocommit=0 undo them all.
func TestSessionTransactions(t *testing.T) {
	f := start(t, proxy.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db := f.client(t, "parseTime=true")
	count := func() int {
		t.Helper()
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM t_account").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	insert := func(ex interface {
		ExecContext(context.Context, string, ...any) (sql.Result, error)
	}, ids ...int) {
		t.Helper()
		for _, id := range ids {
			if _, err := ex.ExecContext(ctx, "INSERT INTO t_account (id, owner, branch, balance, opened) VALUES (?, 'x', 0, 1, NOW())", id); err != nil {
				t.Fatal(err)
			}
		}
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	must := func(q string) {
		t.Helper()
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	must("BEGIN")
	insert(conn, 0, 1, 2, 3) // all four tables on both databases
	var inside int
	if err := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM t_account").Scan(&inside); err != nil || inside != 4 {
		t.Fatalf("the transaction's own count: %d %v", inside, err)
	}
	if n := count(); n != 0 {
		t.Fatalf("another session sees %d uncommitted rows", n)
	}
	must("ROLLBACK")
	if n := count(); n != 0 {
		t.Fatalf("after ROLLBACK: %d rows", n)
	}
	must("START TRANSACTION")
	insert(conn, 0, 1)
	must("COMMIT")
	if n := count(); n != 2 {
		t.Fatalf("after COMMIT: %d rows, want 2", n)
	}

	// autocommit=0: every statement is in a transaction until COMMIT.
	must("SET autocommit = 0")
	insert(conn, 2)
	if n := count(); n != 2 {
		t.Fatalf("autocommit off: another session sees %d rows before COMMIT", n)
	}
	must("ROLLBACK")
	insert(conn, 3)
	must("COMMIT")
	must("SET autocommit = ON")
	insert(conn, 4)
	if n := count(); n != 4 {
		t.Fatalf("autocommit back on: %d rows, want 4", n)
	}

	// database/sql's transactions (START TRANSACTION, isolation levels,
	// read-only) ride the same session.
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		t.Fatal(err)
	}
	insert(tx, 5, 6)
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	ro, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ro.ExecContext(ctx, "INSERT INTO t_account (id, owner, branch, balance, opened) VALUES (7, 'x', 0, 1, NOW())"); code(err) != 1792 {
		t.Fatalf("a write in a read-only transaction: %v, want error 1792", err)
	}
	ro.Rollback()
	if n := count(); n != 4 {
		t.Fatalf("after the rolled-back sql.Tx: %d rows, want 4", n)
	}
}

// What the proxy cannot do exactly is refused with an error naming it;
// the data sources' own errors keep their codes; the session goes on.
func TestErrors(t *testing.T) {
	f := start(t, proxy.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, params := range []string{"interpolateParams=true", ""} {
		db := f.client(t, params)
		db.SetMaxOpenConns(1) // one session throughout
		if _, err := db.ExecContext(ctx, "INSERT INTO t_account (id, owner, branch, balance, opened) VALUES (?, 'x', 0, 1, NOW())", 1); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			sql  string
			code uint16
			says string
		}{
			{"INSERT INTO t_account (id, owner, branch, balance, opened) VALUES (1, 'x', 0, 1, NOW())", 1062, "Duplicate entry"},
			{"SELEKT 1", 1064, "syntax"},
			{"SELECT COUNT(DISTINCT owner) FROM t_account", 1235, "COUNT(DISTINCT"},
			{"SELECT * FROM t_account WHERE id IN (SELECT id FROM t_account)", 1235, "subquery"},
			{"CREATE TABLE t_x (id INT)", 1146, "t_x"},
			{"CREATE DATABASE x", 1235, "CREATE DATABASE"},
			{"DROP TABLE t_account, t_currency", 1235, "one at a time"},
			{"RENAME TABLE t_account TO t_y", 1235, "RENAME"},
			{"SET sql_mode = ''", 1235, "sql_mode"},
			{"SET GLOBAL max_connections = 10", 1235, "GLOBAL"},
			{"SET @x = 1", 1235, "user variables"},
			{"SET NAMES latin1", 1235, "latin1"},
			{"XA START 'x'", 1235, "XA"},
			{"SHOW CREATE TABLE t_nowhere", 1146, "t_nowhere"},
			{"SELECT * FROM t_nowhere", 1146, "t_nowhere"},
			{"UPDATE t_account SET id = 5 WHERE id = 1", 1235, "sharding column"},
		} {
			_, err := db.ExecContext(ctx, c.sql)
			if code(err) != c.code || !strings.Contains(err.Error(), c.says) {
				t.Errorf("%s %s: %v, want error %d saying %q", params, c.sql, err, c.code, c.says)
			}
		}
		// The session still works, and SET that it can keep is accepted.
		for _, q := range []string{"SET NAMES utf8mb4", "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci", "SET character_set_results = NULL",
			"SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", "SET autocommit = 1", "USE sharding_db", "USE `sharding_db`"} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				t.Errorf("%s: %v", q, err)
			}
		}
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM t_account").Scan(&n); err != nil || n != 1 {
			t.Fatalf("after the errors: %d %v", n, err)
		}
		if _, err := db.ExecContext(ctx, "DELETE FROM t_account WHERE id = 1"); err != nil {
			t.Fatal(err)
		}
	}
}

// SHOW answers for the logical database: its one schema, its logical
// tables; server lists come from a data source.
func TestShow(t *testing.T) {
	f := start(t, proxy.Config{Database: "shop"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := sql.Open("mysql", "app:secret@tcp("+f.addr+")/shop")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, c := range []struct{ sql, want string }{
		{"SHOW DATABASES", "Database\nbytes(shop)\n"},
		{"SHOW TABLES", "Tables_in_shop\nbytes(t_account)\nbytes(t_currency)\n"},
		{"SHOW FULL TABLES LIKE 't\\_acc%'", "Tables_in_shop|Table_type\nbytes(t_account)|bytes(BASE TABLE)\n"},
		{"SHOW WARNINGS", "Level|Code|Message\n"},
		{"SHOW VARIABLES LIKE 'max_allowed_packet'", ""},
		{"SELECT DATABASE()", ""},
		{"SHOW INDEX FROM t_account", ""},
	} {
		got, err := rows(ctx, db, c.sql)
		if err != nil {
			t.Errorf("%s: %v", c.sql, err)
			continue
		}
		if c.want != "" && got != c.want {
			t.Errorf("%s:\n%s\nwant:\n%s", c.sql, got, c.want)
		}
		if c.want == "" && strings.Count(got, "\n") != 2 {
			t.Errorf("%s: %q, want one row", c.sql, got)
		}
	}
	// A logical table described as its first node, under its own name.
	for _, q := range []string{"SHOW COLUMNS FROM t_account", "DESCRIBE t_account", "SHOW FULL COLUMNS FROM shop.t_account"} {
		got, err := rows(ctx, db, q)
		if err != nil || strings.Count(got, "\n") != 12 || !strings.Contains(got, "bytes(photo)") {
			t.Errorf("%s: %v\n%s", q, err, got)
		}
	}
	var table, ddl string
	if err := db.QueryRowContext(ctx, "SHOW CREATE TABLE t_account").Scan(&table, &ddl); err != nil || table != "t_account" || !strings.HasPrefix(ddl, "CREATE TABLE `t_account` (") {
		t.Errorf("SHOW CREATE TABLE: %q %q %v", table, ddl, err)
	}
	if got, err := rows(ctx, db, "SHOW INDEX FROM t_account"); err != nil || !strings.Contains(got, "bytes(t_account)|") && !strings.Contains(got, "string(t_account)") {
		t.Errorf("SHOW INDEX: %v\n%s", err, got)
	}
	if _, err := db.ExecContext(ctx, "SHOW COLUMNS FROM t_nowhere"); code(err) != 1146 {
		t.Errorf("SHOW COLUMNS of an unknown table: %v", err)
	}
	if _, err := db.ExecContext(ctx, "EXPLAIN SELECT * FROM t_account"); code(err) != 1235 {
		t.Errorf("EXPLAIN: %v, want 1235", err)
	}
}

// The mariadb command-line client works against the proxy: log in,
// query, see errors.
func TestMariaDBClient(t *testing.T) {
	bin, err := exec.LookPath("mariadb")
	if err != nil {
		t.Fatalf("the mariadb client is not installed (scripts/services.sh installs it): %v", err)
	}
	f := start(t, proxy.Config{})
	host, port, _ := net.SplitHostPort(f.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := func(q string) (string, error) {
		cmd := exec.CommandContext(ctx, bin, "--protocol=TCP", "-h", host, "-P", port, "-uapp", "-psecret", "--skip-ssl", "sharding_db", "--batch", "-e", q)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("INSERT INTO t_account (id, owner, branch, balance, opened) VALUES (1, 'ann', 1, 10.5, '2026-12-06 10:00:00'), (2, 'bob', 2, 20, '2026-12-06 11:00:00')"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	out, err := run("SELECT id, owner, balance, opened FROM t_account ORDER BY id")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := "id\towner\tbalance\topened\n1\tann\t10.50\t2026-12-06 10:00:00.000\n2\tbob\t20.00\t2026-12-06 11:00:00.000\n"
	if out != want {
		t.Fatalf("mariadb printed:\n%q\nwant:\n%q", out, want)
	}
	out, err = run("SELECT COUNT(DISTINCT owner) FROM t_account")
	if err == nil || !strings.Contains(out, "ERROR 1235") || !strings.Contains(out, "COUNT(DISTINCT") {
		t.Fatalf("an unsupported query: %v: %s", err, out)
	}
}

// sysbench's OLTP read/write workload (prepared statements, transactions,
// point and range selects with SUM, ORDER BY and DISTINCT on text,
// updates, delete + insert) runs through the proxy to the end, and leaves
// every row in place.
func TestSysbench(t *testing.T) {
	bin, err := exec.LookPath("sysbench")
	if err != nil {
		t.Fatalf("sysbench is not installed (scripts/services.sh installs it): %v", err)
	}
	const size = 1000
	f, _ := startSysbench(t, size)
	host, port, _ := net.SplitHostPort(f.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "oltp_read_write", "--db-driver=mysql", "--mysql-host="+host, "--mysql-port="+port,
		"--mysql-user=app", "--mysql-password=secret", "--mysql-db=sharding_db", "--tables=1", fmt.Sprintf("--table-size=%d", size),
		"--threads=2", "--events=200", "--time=0", "--rand-seed=1", "run")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sysbench: %v\n%s", err, out)
	}
	// sysbench stops at any error but the ones it retries as its docs
	// say (deadlocks and lock wait timeouts between its two threads'
	// transactions, which MariaDB alone has too): it must finish all 200.
	if !strings.Contains(string(out), "transactions:                        200") {
		t.Fatalf("sysbench did not run 200 transactions:\n%s", out)
	}
	var n int
	if err := f.client(t, "").QueryRowContext(ctx, "SELECT COUNT(*) FROM sbtest1").Scan(&n); err != nil || n != size {
		t.Fatalf("after the run: %d rows (%v), want %d", n, err, size)
	}
}

// startSysbench serves sysbench's table sbtest1, sharded by id over two
// databases of two tables each, filled with size rows as sysbench's
// prepare would (which the proxy cannot run: it creates tables).
//
// Two sysbench transactions that lock rows on the two data sources in
// opposite orders wait on each other where neither database sees a
// cycle: MariaDB ends it at innodb_lock_wait_timeout (50 s by default)
// and sysbench retries. The data source URLs set it to 2 s, as
// docs/shard.md advises for sharded transactions.
const lockWait = "?innodb_lock_wait_timeout=2"

func startSysbench(t *testing.T, size int) (*fixture, []*sql.DB) {
	t.Helper()
	var ddl []string
	for j := range 2 {
		ddl = append(ddl, fmt.Sprintf("CREATE TABLE sbtest1_%d (id INTEGER NOT NULL AUTO_INCREMENT, k INTEGER DEFAULT '0' NOT NULL, c CHAR(120) DEFAULT '' NOT NULL, pad CHAR(60) DEFAULT '' NOT NULL, PRIMARY KEY (id), KEY k_1 (k))", j))
	}
	pools, urls := shardtest.Databases(t, 2, ddl...)
	r, err := shard.ParseRules([]byte(fmt.Sprintf(`dataSources:
  ds_0: %s
  ds_1: %s
tables:
  sbtest1:
    actualDataNodes: ds_${0..1}.sbtest1_${0..1}
    databaseStrategy: {standard: {shardingColumn: id, shardingAlgorithmName: by_id}}
    tableStrategy: {standard: {shardingColumn: id, shardingAlgorithmName: by_half}}
shardingAlgorithms:
  by_id: {type: MOD, props: {sharding-count: 2}}
  by_half: {type: INLINE, props: {algorithm-expression: "sbtest1_${id / 2 %% 2}", allow-range-query-with-inline-sharding: true}}
`, urls[0]+lockWait, urls[1]+lockWait)))
	if err != nil {
		t.Fatal(err)
	}
	f := serve(t, r, proxy.Config{})
	db := f.client(t, "")
	for lo := 1; lo <= size; lo += 100 {
		var q strings.Builder
		var args []any
		q.WriteString("INSERT INTO sbtest1 (id, k, c, pad) VALUES ")
		for id := lo; id < lo+100 && id <= size; id++ {
			if id > lo {
				q.WriteString(", ")
			}
			q.WriteString("(?, ?, ?, ?)")
			args = append(args, id, (id*7919)%size+1, fmt.Sprintf("%011d-%011d-%011d-%011d-%011d-%011d-%011d-%011d-%011d-%011d", id, id*3, id*5, id*7, id*11, id*13, id*17, id*19, id*23, id*29),
				fmt.Sprintf("%011d-%011d-%011d-%011d-%011d", id*31, id*37, id*41, id*43, id*47))
		}
		if _, err := db.Exec(q.String(), args...); err != nil {
			t.Fatal(err)
		}
	}
	return f, pools
}

// Update switches the rules under running sessions: a transaction open
// at the switch finishes on the rules it began with; the next statement
// is routed by the new ones.
func TestUpdateRules(t *testing.T) {
	f := start(t, proxy.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db := f.client(t, "")
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "INSERT INTO t_account (id, owner, branch, balance, opened) VALUES (2, 'x', 0, 1, NOW())"); err != nil {
		t.Fatal(err)
	}
	// New rules: t_account is one table in the first database (t_account_0).
	old := f.srv.Executor().Rules()
	r, err := shard.ParseRules([]byte(fmt.Sprintf("dataSources:\n  ds_0: %s\ntables:\n  t_account:\n    actualDataNodes: ds_0.t_account_0\n", old.DataSources["ds_0"])))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Update(r, map[string]*sql.DB{"ds_0": f.srv.Executor().DB("ds_0")}); err != nil {
		t.Fatal(err)
	}
	// Id 3 belonged to ds_1.t_account_1 under the old rules: the open
	// transaction still puts it there.
	if _, err := conn.ExecContext(ctx, "INSERT INTO t_account (id, owner, branch, balance, opened) VALUES (3, 'x', 0, 1, NOW())"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := f.pools[1].QueryRowContext(ctx, "SELECT COUNT(*) FROM t_account_1 WHERE id = 3").Scan(&n); err != nil || n != 1 {
		t.Fatalf("the open transaction's second insert: %d rows in ds_1.t_account_1 (%v), want 1", n, err)
	}
	// After it, id 5 goes where the new rules say.
	if _, err := conn.ExecContext(ctx, "INSERT INTO t_account (id, owner, branch, balance, opened) VALUES (5, 'x', 0, 1, NOW())"); err != nil {
		t.Fatal(err)
	}
	if err := f.pools[0].QueryRowContext(ctx, "SELECT COUNT(*) FROM t_account_0 WHERE id = 5").Scan(&n); err != nil || n != 1 {
		t.Fatalf("after the switch: %d rows with id 5 in ds_0.t_account_0 (%v), want 1", n, err)
	}
	got, err := rows(ctx, db, "SHOW TABLES")
	if err != nil || got != "Tables_in_sharding_db\nbytes(t_account)\n" {
		t.Fatalf("SHOW TABLES after the switch: %q %v", got, err)
	}
}

// DDL on a logical table runs on each of its data nodes (a broadcast
// table's on every data source).
func TestDDL(t *testing.T) {
	f := start(t, proxy.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db := f.client(t, "")
	for _, q := range []string{
		"ALTER TABLE t_account ADD COLUMN extra INT NOT NULL DEFAULT 7",
		"CREATE INDEX i_owner ON t_account (owner)",
		"DROP TABLE t_currency",
		"CREATE TABLE t_currency (code CHAR(3) PRIMARY KEY, name VARCHAR(40) NOT NULL, symbol VARCHAR(4))",
		"INSERT INTO t_account (id, owner, branch, balance, opened) VALUES (1, 'a', 0, 1, NOW()), (2, 'b', 0, 1, NOW())",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for i, p := range f.pools {
		for j := range 2 {
			var n int
			if err := p.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME = 'i_owner'", fmt.Sprintf("t_account_%d", j)).Scan(&n); err != nil || n != 1 {
				t.Fatalf("ds_%d.t_account_%d: index i_owner %d (%v)", i, j, n, err)
			}
		}
		var sym sql.NullString
		if err := p.QueryRowContext(ctx, "SELECT symbol FROM t_currency LIMIT 1").Scan(&sym); err != nil && err != sql.ErrNoRows {
			t.Fatalf("ds_%d: the recreated t_currency: %v", i, err)
		}
	}
	var extra, n int
	if err := db.QueryRowContext(ctx, "SELECT MIN(extra) FROM t_account").Scan(&extra); err != nil || extra != 7 {
		t.Fatalf("the added column: %d %v", extra, err)
	}
	if _, err := db.ExecContext(ctx, "TRUNCATE TABLE t_account"); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM t_account").Scan(&n); err != nil || n != 0 {
		t.Fatalf("after TRUNCATE: %d rows (%v)", n, err)
	}
}

// A client that dies in the middle of a large result frees its session:
// the proxy stops writing, other clients go on, and Close does not wait
// on it.
func TestClientKilledMidResult(t *testing.T) {
	f := start(t, proxy.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db := f.client(t, "")
	note := strings.Repeat("x", 1000)
	for lo := 0; lo < 20_000; lo += 500 {
		var q strings.Builder
		var args []any
		q.WriteString("INSERT INTO t_account (id, owner, branch, balance, opened, note) VALUES ")
		for id := lo; id < lo+500; id++ {
			if id > lo {
				q.WriteString(", ")
			}
			q.WriteString("(?, 'x', 0, 1, NOW(), ?)")
			args = append(args, id, note)
		}
		if _, err := db.ExecContext(ctx, q.String(), args...); err != nil {
			t.Fatal(err)
		}
	}
	// A raw client: log in, ask for a large result, read its first row,
	// hang up with a reset, as a killed process leaves.
	var conns []net.Conn
	mysql.RegisterDialContext("killed", func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			conns = append(conns, c)
		}
		return c, err
	})
	killMidResult := func(q string) {
		t.Helper()
		conns = nil
		victim, err := sql.Open("mysql", "app:secret@killed("+f.addr+")/sharding_db")
		if err != nil {
			t.Fatal(err)
		}
		defer victim.Close()
		victim.SetMaxOpenConns(1)
		rows, err := victim.QueryContext(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		if !rows.Next() {
			t.Fatalf("%s: no first row: %v", q, rows.Err())
		}
		for _, c := range conns {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}
	killMidResult("SELECT id, note FROM t_account ORDER BY id") // 20 MB, merged
	// Others are served meanwhile and after.
	var n int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM t_account").Scan(&n); err != nil || n != 20_000 {
		t.Fatalf("another client after the kill: %d %v", n, err)
	}

	// The same over a result one data node streams (5 MB from
	// ds_0.t_account_0): the data source's connection goes back to its
	// pool — one connection only here, so a leak would stop the next query.
	for _, ds := range []string{"ds_0", "ds_1"} {
		f.srv.Executor().DB(ds).SetMaxOpenConns(1)
	}
	var in strings.Builder
	for id := 0; id < 20_000; id += 4 {
		if id > 0 {
			in.WriteString(", ")
		}
		fmt.Fprint(&in, id)
	}
	killMidResult("SELECT id, note FROM t_account WHERE id IN (" + in.String() + ")")
	wait.For(t, 10*time.Second, "ds_0's connection back in its pool after the streaming client died", func() bool {
		return f.srv.Executor().DB("ds_0").Stats().InUse == 0
	})
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM t_account WHERE id IN ("+in.String()+")").Scan(&n); err != nil || n != 5_000 {
		t.Fatalf("a query on the same data source after the streaming client died: %d %v", n, err)
	}
	done := make(chan struct{})
	go func() { f.srv.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Close hangs on the killed client's session")
	}
}
