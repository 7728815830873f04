// Command shard benchmarks Tangram's sharding front ends against MariaDB
// itself, the baseline a proxy or a driver is judged by (ShardingSphere
// reports its proxy's overhead the same way):
//
//   - sysbench 1.0 (Debian's) oltp_point_select and oltp_read_write, with
//     prepared statements (its default), -threads threads, against
//     MariaDB directly (one database, table sbtest1 of -rows rows, made by
//     sysbench prepare) and against `tangram shard proxy` (a child
//     process, default pool) in front of the same rows in two layouts: one
//     data node (the proxy's own cost) and two databases of two tables
//     each, sharded by id (MOD over the databases, id / 2 % 2 over the
//     tables: sysbench's range queries go to all four nodes and are
//     merged, its ORDER BY and DISTINCT on text by collation keys). All
//     databases are on the local MariaDB (TANGRAM_BENCH_MYSQL, default
//     root@127.0.0.1:3306), same server settings for every row.
//   - HAProxy (Debian's, TCP mode, its default thread count) relaying
//     sysbench's connections to MariaDB untouched: no SQL work at all, so
//     its row is the floor any proxy hop reaches on this machine, where the
//     client, the proxy and the database share the same cores. The proxy
//     rows are also given against it. Skipped, with a note, when haproxy
//     is not installed (apt-get install haproxy).
//   - the database/sql driver: -threads goroutines of point selects
//     through sql.Open("tangram-shard") (one node, and 2×2) against
//     go-sql-driver/mysql straight to the one table, each with a prepared
//     statement.
//   - start-up: `tangram shard proxy` with rules of 1,000 logical tables
//     (8,000 data nodes), from exec to the first query answered. No peer
//     row: ShardingSphere-Proxy (Java) cannot run on this machine.
//
// The systems take turns going first over -rounds rounds; each row is a
// median with its spread (min–max); errors are counted; the last line is
// JSON.
//
//	go run ./bench/shard           # 10 s per case, 100,000 rows, 3 rounds
//	go run ./bench/shard -quick    # 4 s per case, 10,000 rows, 3 rounds
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	_ "github.com/go-sql-driver/mysql" // the direct rows and the set-up

	"github.com/tangram-dev/tangram/bench/internal/spread"
	"github.com/tangram-dev/tangram/bench/internal/tangrambin"
	_ "github.com/tangram-dev/tangram/shard/sqldriver" // tangram-shard
)

var mysqlAddr = envOr("TANGRAM_BENCH_MYSQL", "root@tcp(127.0.0.1:3306)")

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func main() {
	quick := flag.Bool("quick", false, "4 s per case, 10,000 rows")
	dur := flag.Duration("d", 10*time.Second, "time per case and system")
	rows := flag.Int("rows", 100_000, "rows in sbtest1")
	rounds := flag.Int("rounds", 3, "rounds (systems alternate going first)")
	threads := flag.Int("threads", 4, "sysbench threads and driver goroutines")
	bin := flag.String("tangram", "", "a tangram binary (default: build ./cmd/tangram)")
	flag.Parse()
	if *quick {
		*dur, *rows = 4*time.Second, 10_000
	}
	if err := run(*dur, *rows, *rounds, *threads, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "bench/shard:", err)
		os.Exit(1)
	}
}

// bench holds the databases and the proxy binary.
type bench struct {
	dir     string
	bin     string
	prefix  string
	admin   *sql.DB
	rows    int
	threads int
	user    string // MariaDB user, password, host and port for sysbench
	pass    string
	host    string
	port    string
	haproxy string // haproxy's path, "" when not installed
}

// result is one system's measurement of one case.
type result struct {
	tps, p99 float64
	errs     int
	firstErr string
}

func run(d time.Duration, rows, rounds, threads int, bin string) error {
	if _, err := exec.LookPath("sysbench"); err != nil {
		return fmt.Errorf("sysbench is not installed (apt-get install sysbench; scripts/services.sh does it): %w", err)
	}
	dir, err := os.MkdirTemp("", "bench-shard-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if bin, err = tangrambin.Build(dir, bin); err != nil {
		return err
	}
	b, err := setUp(dir, bin, rows, threads)
	if err != nil {
		return err
	}
	defer b.tearDown()

	layouts := []string{"direct", "one", "sharded"}
	names := map[string]string{
		"direct":  "MariaDB direct (1 table)",
		"one":     "tangram shard proxy, 1 node",
		"sharded": "tangram shard proxy, 2 databases × 2 tables",
		"relay":   "HAProxy TCP relay to MariaDB (no SQL work)",
	}
	haproxy, herr := exec.LookPath("haproxy")
	if herr == nil {
		layouts = append(layouts, "relay")
	} else {
		fmt.Fprintln(os.Stderr, "haproxy is not installed: no relay row (apt-get install haproxy)")
	}
	b.haproxy = haproxy
	var out []spread.Row
	fmt.Printf("| case | system | transactions/s | p99 ms | errors |\n| --- | --- | --- | --- | --- |\n")
	for _, test := range []string{"oltp_point_select", "oltp_read_write"} {
		res := map[string][]result{}
		for r := range rounds {
			for _, l := range spread.Order(layouts, r) {
				fmt.Fprintf(os.Stderr, "%s round %d: %s …\n", test, r+1, names[l])
				res[l] = append(res[l], b.sysbench(test, l, d))
			}
		}
		for _, l := range layouts {
			printRow(test, names[l], res[l])
		}
		for _, l := range layouts[1:] {
			row := spread.NewRow(test+": "+names[l]+" vs MariaDB direct, txn/s", median(res[l], tps), median(res["direct"], tps),
				spread.Ratios(vals(res[l], tps), vals(res["direct"], tps)), errCount(res[l])+errCount(res["direct"]))
			row.Note = fmt.Sprintf("sysbench %s, %d threads, prepared statements, %d rows", test, threads, rows)
			out = append(out, row)
		}
		if res["relay"] != nil {
			for _, l := range []string{"one", "sharded"} {
				row := spread.NewRow(test+": "+names[l]+" vs HAProxy TCP relay, txn/s", median(res[l], tps), median(res["relay"], tps),
					spread.Ratios(vals(res[l], tps), vals(res["relay"], tps)), errCount(res[l])+errCount(res["relay"]))
				row.Note = "the relay does no SQL work: the cost of the hop alone on these cores"
				out = append(out, row)
			}
		}
	}

	// The driver against go-sql-driver/mysql.
	drivers := []string{"go-sql-driver", "one", "sharded"}
	dnames := map[string]string{
		"go-sql-driver": "go-sql-driver/mysql direct",
		"one":           "tangram-shard driver, 1 node",
		"sharded":       "tangram-shard driver, 2 databases × 2 tables",
	}
	res := map[string][]result{}
	for r := range rounds {
		for _, dv := range spread.Order(drivers, r) {
			fmt.Fprintf(os.Stderr, "driver point select round %d: %s …\n", r+1, dnames[dv])
			res[dv] = append(res[dv], b.driver(dv, d))
		}
	}
	for _, dv := range drivers {
		printRow("driver point select", dnames[dv], res[dv])
	}
	for _, dv := range drivers[1:] {
		row := spread.NewRow("point select: "+dnames[dv]+" vs go-sql-driver/mysql, queries/s", median(res[dv], tps), median(res["go-sql-driver"], tps),
			spread.Ratios(vals(res[dv], tps), vals(res["go-sql-driver"], tps)), errCount(res[dv])+errCount(res["go-sql-driver"]))
		row.Note = fmt.Sprintf("%d goroutines, a prepared SELECT c FROM sbtest1 WHERE id = ? each", threads)
		out = append(out, row)
	}

	// Start-up with 1,000 tables.
	var starts []float64
	startErrs := 0
	for r := range rounds {
		fmt.Fprintf(os.Stderr, "start-up round %d …\n", r+1)
		s, err := b.startUp(1000)
		if err != nil {
			startErrs++
			fmt.Fprintln(os.Stderr, "start-up:", err)
			continue
		}
		starts = append(starts, s.Seconds()*1000)
	}
	st := spread.Summarise(starts)
	fmt.Printf("| start-up, 1,000 tables (8,000 data nodes) | tangram shard proxy | exec to first answer: %s ms | | %d |\n", st.Format("%.0f"), startErrs)
	out = append(out, spread.Row{Case: "start-up with 1,000 logical tables, ms (no peer)", Ours: round1(st.Median), Rounds: st.N, Errors: startErrs,
		Note: "exec of tangram shard proxy to its first answered query; goal < 1000 ms"})
	spread.Print("shard", "MariaDB "+b.version(), out, map[string]any{"threads": threads, "seconds": d.Seconds(), "table_rows": rows})
	return nil
}

func round1(x float64) float64 { return float64(int64(x*10+0.5)) / 10 }

func setUp(dir, bin string, rows, threads int) (*bench, error) {
	admin, err := sql.Open("mysql", mysqlAddr+"/?multiStatements=true")
	if err != nil {
		return nil, err
	}
	if err := admin.Ping(); err != nil {
		return nil, fmt.Errorf("MariaDB at %s: %w", mysqlAddr, err)
	}
	r := make([]byte, 3)
	_, _ = rand.Read(r)
	b := &bench{dir: dir, bin: bin, prefix: "tgbench_shard_" + hex.EncodeToString(r), admin: admin, rows: rows, threads: threads}
	m := regexp.MustCompile(`^([^:@]*)(?::([^@]*))?@tcp\(([^:)]+):(\d+)\)$`).FindStringSubmatch(mysqlAddr)
	if m == nil {
		return nil, fmt.Errorf("TANGRAM_BENCH_MYSQL %q: want user[:password]@tcp(host:port)", mysqlAddr)
	}
	b.user, b.pass, b.host, b.port = m[1], m[2], m[3], m[4]
	for _, db := range []string{"direct", "one", "s0", "s1"} {
		if _, err := admin.Exec("CREATE DATABASE " + b.db(db)); err != nil {
			b.tearDown()
			return nil, err
		}
	}
	fmt.Fprintf(os.Stderr, "loading %d rows with sysbench prepare …\n", rows)
	if out, err := b.sysbenchCmd("oltp_read_write", b.host, b.port, b.user, b.pass, b.db("direct"), 0, "prepare").CombinedOutput(); err != nil {
		b.tearDown()
		return nil, fmt.Errorf("sysbench prepare: %w\n%s", err, out)
	}
	stmts := []string{
		fmt.Sprintf("CREATE TABLE %s.sbtest1 LIKE %s.sbtest1", b.db("one"), b.db("direct")),
		fmt.Sprintf("INSERT INTO %s.sbtest1 SELECT * FROM %s.sbtest1", b.db("one"), b.db("direct")),
	}
	for i := range 2 {
		for j := range 2 {
			t := fmt.Sprintf("%s.sbtest1_%d", b.db(fmt.Sprintf("s%d", i)), j)
			stmts = append(stmts, fmt.Sprintf("CREATE TABLE %s LIKE %s.sbtest1", t, b.db("direct")),
				fmt.Sprintf("INSERT INTO %s SELECT * FROM %s.sbtest1 WHERE id %% 2 = %d AND (id DIV 2) %% 2 = %d", t, b.db("direct"), i, j))
		}
	}
	for _, s := range stmts {
		if _, err := admin.Exec(s); err != nil {
			b.tearDown()
			return nil, fmt.Errorf("%s: %w", s, err)
		}
	}
	url := func(db string) string {
		cred := b.user
		if b.pass != "" {
			cred += ":" + b.pass
		}
		return fmt.Sprintf("mysql://%s@%s:%s/%s", cred, b.host, b.port, b.db(db))
	}
	rules := map[string]string{
		"one": fmt.Sprintf("dataSources:\n  ds_0: %s\ntables:\n  sbtest1:\n    actualDataNodes: ds_0.sbtest1\n", url("one")),
		"sharded": fmt.Sprintf(`dataSources:
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
`, url("s0"), url("s1")),
	}
	for name, text := range rules {
		if err := os.WriteFile(b.rulesPath(name), []byte(text), 0o600); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func (b *bench) db(name string) string        { return b.prefix + "_" + name }
func (b *bench) rulesPath(name string) string { return filepath.Join(b.dir, name+".yaml") }

func (b *bench) tearDown() {
	for _, db := range []string{"direct", "one", "s0", "s1"} {
		_, _ = b.admin.Exec("DROP DATABASE IF EXISTS " + b.db(db))
	}
	b.admin.Close()
}

func (b *bench) version() string {
	var v string
	_ = b.admin.QueryRow("SELECT VERSION()").Scan(&v)
	return v
}

func (b *bench) sysbenchCmd(test, host, port, user, pass, db string, d time.Duration, verb string) *exec.Cmd {
	args := []string{test, "--db-driver=mysql", "--mysql-host=" + host, "--mysql-port=" + port, "--mysql-user=" + user,
		"--mysql-db=" + db, "--tables=1", fmt.Sprintf("--table-size=%d", b.rows), fmt.Sprintf("--threads=%d", b.threads),
		"--percentile=99", "--mysql-ssl=off"}
	if pass != "" {
		args = append(args, "--mysql-password="+pass)
	}
	if d > 0 {
		args = append(args, fmt.Sprintf("--time=%d", int(d.Seconds())), "--events=0")
	}
	return exec.Command("sysbench", append(args, verb)...)
}

// proxy starts `tangram shard proxy` over the rules of layout and
// returns its address and a stop function.
func (b *bench) proxy(layout string) (string, func(), error) {
	addr, err := tangrambin.FreeAddr()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(b.bin, "shard", "proxy", b.rulesPath(layout), "--listen", addr, "--user", "app:secret", "--log-level", "error")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := stopper(cmd)
	// It prints "serving …" once it listens.
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.Contains(line, "serving") {
		stop()
		return "", nil, fmt.Errorf("tangram shard proxy did not start: %q %v", line, err)
	}
	go func() { _, _ = bufio.NewReader(out).WriteTo(discard{}) }()
	return addr, stop, nil
}

// relay starts HAProxy in TCP mode in front of MariaDB and returns its
// address and a stop function. The configuration is HAProxy's own
// recommendation for a TCP service: mode tcp, one thread per core (its
// default), no logging.
func (b *bench) relay() (string, func(), error) {
	addr, err := tangrambin.FreeAddr()
	if err != nil {
		return "", nil, err
	}
	cfg := filepath.Join(b.dir, "haproxy.cfg")
	text := fmt.Sprintf(`global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend sql
    bind %s
    default_backend mariadb
backend mariadb
    server db %s:%s
`, addr, b.host, b.port)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		return "", nil, err
	}
	cmd := exec.Command(b.haproxy, "-db", "-f", cfg)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start haproxy: %w", err)
	}
	stop := stopper(cmd)
	// Ready once it answers with MariaDB's greeting.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			one := make([]byte, 1)
			_, err = c.Read(one)
			c.Close()
			if err == nil {
				return addr, stop, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, fmt.Errorf("haproxy did not relay to MariaDB within 10 s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopper returns a function that stops a started child: SIGTERM, then
// SIGKILL after 10 s.
func stopper(cmd *exec.Cmd) func() {
	return func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

var (
	tpsRe = regexp.MustCompile(`transactions:\s+\d+\s+\(([\d.]+) per sec`)
	p99Re = regexp.MustCompile(`99th percentile:\s+([\d.]+)`)
	errRe = regexp.MustCompile(`ignored errors:\s+(\d+)`)
)

// sysbench runs test for d against layout.
func (b *bench) sysbench(test, layout string, d time.Duration) result {
	host, port, user, pass, db := b.host, b.port, b.user, b.pass, b.db("direct")
	switch layout {
	case "direct":
	case "relay":
		addr, stop, err := b.relay()
		if err != nil {
			return result{errs: 1, firstErr: err.Error()}
		}
		defer stop()
		host, port, _ = strings.Cut(addr, ":")
	default:
		addr, stop, err := b.proxy(layout)
		if err != nil {
			return result{errs: 1, firstErr: err.Error()}
		}
		defer stop()
		host, port, _ = strings.Cut(addr, ":")
		user, pass, db = "app", "secret", "sharding_db"
	}
	out, err := b.sysbenchCmd(test, host, port, user, pass, db, d, "run").CombinedOutput()
	if err != nil {
		return result{errs: 1, firstErr: fmt.Sprintf("%v: %s", err, lastLines(string(out), 3))}
	}
	var r result
	if m := tpsRe.FindStringSubmatch(string(out)); m != nil {
		r.tps, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := p99Re.FindStringSubmatch(string(out)); m != nil {
		r.p99, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := errRe.FindStringSubmatch(string(out)); m != nil {
		r.errs, _ = strconv.Atoi(m[1])
	}
	if r.tps == 0 {
		r.errs++
		r.firstErr = "no figure in sysbench's output: " + lastLines(string(out), 3)
	}
	return r
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], " | ")
}

// driver runs point selects for d through one driver.
func (b *bench) driver(which string, d time.Duration) result {
	var db *sql.DB
	var err error
	if which == "go-sql-driver" {
		db, err = sql.Open("mysql", mysqlAddr+"/"+b.db("direct"))
	} else {
		db, err = sql.Open("tangram-shard", b.rulesPath(which))
	}
	if err != nil {
		return result{errs: 1, firstErr: err.Error()}
	}
	defer db.Close()
	db.SetMaxOpenConns(b.threads)
	db.SetMaxIdleConns(b.threads)
	ctx := context.Background()
	st, err := db.PrepareContext(ctx, "SELECT c FROM sbtest1 WHERE id = ?")
	if err != nil {
		return result{errs: 1, firstErr: err.Error()}
	}
	defer st.Close()
	var n, errs atomic.Int64
	var firstErr atomic.Value
	var lat [][]time.Duration
	var mu sync.Mutex
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range b.threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			var c string
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := st.QueryRowContext(ctx, mrand.IntN(b.rows)+1).Scan(&c); err != nil && !errors.Is(err, sql.ErrNoRows) {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				mine = append(mine, time.Since(t0))
				n.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine)
			mu.Unlock()
		}()
	}
	wg.Wait()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	r := result{tps: float64(n.Load()) / d.Seconds(), errs: int(errs.Load())}
	if len(all) > 0 {
		r.p99 = float64(all[len(all)*99/100]) / float64(time.Millisecond)
	}
	if v := firstErr.Load(); v != nil {
		r.firstErr = v.(string)
	}
	return r
}

// startUp times `tangram shard proxy` over rules of n logical tables
// (two data sources, four tables each) from exec to its first answer.
func (b *bench) startUp(n int) (time.Duration, error) {
	var sb strings.Builder
	cred := b.user
	if b.pass != "" {
		cred += ":" + b.pass
	}
	fmt.Fprintf(&sb, "dataSources:\n  ds_0: mysql://%s@%s:%s/%s\n  ds_1: mysql://%s@%s:%s/%s\ntables:\n", cred, b.host, b.port, b.db("s0"), cred, b.host, b.port, b.db("s1"))
	for i := range n {
		fmt.Fprintf(&sb, "  t_%d:\n    actualDataNodes: ds_${0..1}.t_%d_${0..3}\n    databaseStrategy: {standard: {shardingColumn: id, shardingAlgorithmName: mod2}}\n    tableStrategy: {standard: {shardingColumn: k, shardingAlgorithmName: mod4}}\n", i, i)
	}
	sb.WriteString("shardingAlgorithms:\n  mod2: {type: MOD, props: {sharding-count: 2}}\n  mod4: {type: MOD, props: {sharding-count: 4}}\n")
	path := filepath.Join(b.dir, "thousand.yaml")
	if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
		return 0, err
	}
	addr, err := tangrambin.FreeAddr()
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	cmd := exec.Command(b.bin, "shard", "proxy", path, "--listen", addr, "--user", "app:secret", "--log-level", "error")
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer stopper(cmd)()
	db, err := sql.Open("mysql", "app:secret@tcp("+addr+")/sharding_db")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	for time.Since(t0) < 30*time.Second {
		var one int
		if err := db.QueryRow("SELECT 1").Scan(&one); err == nil {
			return time.Since(t0), nil
		}
		time.Sleep(2 * time.Millisecond) // sleep-ok: polling a child process's port
	}
	return 0, errors.New("no answer within 30 s")
}

func tps(r result) float64 { return r.tps }

func vals(rs []result, f func(result) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
		if r.tps == 0 {
			out[i] = math.NaN()
		}
	}
	return out
}

func median(rs []result, f func(result) float64) float64 {
	return round1(spread.Summarise(vals(rs, f)).Median)
}

func errCount(rs []result) int {
	n := 0
	for _, r := range rs {
		n += r.errs
	}
	return n
}

func printRow(test, name string, rs []result) {
	first := ""
	for _, r := range rs {
		if r.firstErr != "" {
			first = " (" + r.firstErr + ")"
			break
		}
	}
	fmt.Printf("| %s | %s | %s | %s | %d%s |\n", test, name, spread.Summarise(vals(rs, tps)).Format("%.0f"),
		spread.Summarise(vals(rs, func(r result) float64 { return r.p99 })).Format("%.2f"), errCount(rs), first)
}
