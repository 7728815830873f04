package proxy_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tangram-dev/tangram/internal/store/storetest"
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
	return &fixture{addr: ln.Addr().String(), srv: srv, pools: pools, ref: refs[0]}
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
					id, fmt.Sprintf("owner%d", id%4), id%4, fmt.Sprintf("%d.%02d", id*100, id), rate, score, base.Add(time.Duration(id)*time.Hour), born, alarm, note, photo)
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
			res, err := p.ExecContext(ctx, "UPDATE t_account SET balance = balance + 1 WHERE owner = ?", "owner1")
			if err != nil {
				t.Fatal(err)
			}
			if n, _ = res.RowsAffected(); n != 3 {
				t.Fatalf("UPDATE across shards affected %d rows, want 3", n)
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
