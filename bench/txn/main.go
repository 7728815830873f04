// Command txn benchmarks Tangram's distributed-transaction coordinator
// against DTM v1.19.0 (github.com/dtm-labs/dtm, built from the module
// proxy by exact version: the bench module's go.mod lists it as a tool).
//
// Workload: a transfer of one unit between two participant databases on
// the local MariaDB (TANGRAM_BENCH_MYSQL, default root@127.0.0.1:3306), a
// debit branch and a credit branch, each operation of each branch two SQL
// statements (an UPDATE of the account and an INSERT into a ledger) inside
// its system's sub-transaction barrier (ours: txn.Barrier; DTM's:
// dtmcli.BranchBarrier) or XA branch. The participants are the same HTTP
// service in this process for both systems. Each of -conc workers
// transfers between accounts of its own (no row contention) and waits
// for the end of phase two (ours: wait; DTM: WaitResult), so a committed
// answer means every branch confirmed.
//
// Coordinators, each alone while measured (started for its turn, stopped
// after): tangram server with the txn component on PostgreSQL
// (TANGRAM_BENCH_POSTGRES, default postgres@127.0.0.1:5432) as the issue
// specifies, a second row of ours on the same MariaDB as DTM, and DTM with
// its MySQL storage on that MariaDB (how its users run it), its
// configuration left at its defaults except the ports and LogLevel error
// (its per-request info log is not what is measured). Modes: Saga, TCC,
// XA. AT mode is compared with the same two local transactions run
// without a global transaction (same process, same statements): the
// cost AT adds.
//
// Figures: global transactions per second, p50/p99 latency of one, and
// the coordinator process's CPU per 1000 transactions. The systems take
// turns going first over -rounds rounds; rows show the median and the
// spread; errors are counted; the last line is JSON.
//
//	go run ./bench/txn           # 5 s per case, 3 rounds
//	go run ./bench/txn -quick    # 2 s per case, 3 rounds
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dtm-labs/dtm/client/dtmcli"
	dtmlog "github.com/dtm-labs/dtm/client/dtmcli/logger"
	"github.com/go-resty/resty/v2"
	"github.com/go-sql-driver/mysql"   // participants' and DTM's database
	_ "github.com/jackc/pgx/v5/stdlib" // our store's database (set-up only)

	"github.com/tangram-dev/tangram/bench/internal/spread"
	"github.com/tangram-dev/tangram/bench/internal/tangrambin"
	"github.com/tangram-dev/tangram/txn"
	"github.com/tangram-dev/tangram/txn/at"
)

const token = "tgm_benchtxntoken000000000000000000000"

var (
	mysqlAddr = envOr("TANGRAM_BENCH_MYSQL", "root@tcp(127.0.0.1:3306)")
	pgURL     = envOr("TANGRAM_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
	quiet     = slog.New(slog.NewTextHandler(io.Discard, nil))
)

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func main() {
	quick := flag.Bool("quick", false, "2 s per case")
	dur := flag.Duration("d", 5*time.Second, "time per case and system")
	rounds := flag.Int("rounds", 3, "rounds (systems alternate going first)")
	conc := flag.Int("conc", 16, "concurrent global transactions")
	bin := flag.String("tangram", "", "a tangram binary (default: build ./cmd/tangram)")
	dtmBin := flag.String("dtm", "", "a DTM v1.19.0 binary (default: build it from the module proxy)")
	modes := flag.String("modes", "saga,tcc,xa,at", "modes to measure")
	flag.StringVar(&debugAddr, "pprof", "", "serve the tangram server's net/http/pprof on this address (profiling the coordinator)")
	cpuProfile := flag.String("cpuprofile", "", "write the bench process's CPU profile (its participants and clients) to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/txn: -cpuprofile:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if *quick {
		*dur = 2 * time.Second
	}
	slog.SetDefault(quiet)
	dtmlog.InitLog("error") // its client logs every XA connection at info
	if err := run(*dur, *rounds, *conc, *bin, *dtmBin, strings.Split(*modes, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "bench/txn:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// result is one system's measurement of one case.
type result struct {
	tps, p50, p99, cpuPer1k float64
	slowest                 float64 // ms, including calls that ended after the window
	errs                    int
	firstErr                string
	inDoubt                 int // XA branches its coordinator left prepared
}

func run(d time.Duration, rounds, conc int, bin, dtmBin string, modes []string) error {
	dir, err := os.MkdirTemp("", "bench-txn-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if bin, err = tangrambin.Build(dir, bin); err != nil {
		return err
	}
	if dtmBin == "" && slices.ContainsFunc(modes, func(m string) bool { return strings.TrimSpace(m) != "at" }) {
		if dtmBin, err = buildDTM(dir); err != nil {
			return err
		}
	}
	p, err := newParticipants(conc)
	if err != nil {
		return err
	}
	defer p.close()

	systems := []*system{
		{name: "tangram (PostgreSQL store)", kind: "tangram", store: "postgres"},
		{name: "tangram (MariaDB store)", kind: "tangram", store: "mysql"},
		{name: "DTM v1.19.0 (MySQL storage on MariaDB)", kind: "dtm"},
	}
	var rows []spread.Row
	fmt.Printf("| mode | system | global txn/s | p50 ms | p99 ms | slowest ms | coordinator CPU ms per 1000 txns | XA branches left prepared | errors |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, mode := range modes {
		mode = strings.TrimSpace(mode)
		if mode == "at" {
			rows = append(rows, measureAT(bin, dir, p, d, rounds, conc)...)
			continue
		}
		res := map[string][]result{}
		for r := range rounds {
			for _, s := range spread.Order(systems, r) {
				fmt.Fprintf(os.Stderr, "%s round %d: %s …\n", mode, r+1, s.name)
				out, err := s.measure(bin, dtmBin, dir, p, mode, d, conc)
				if err != nil {
					return fmt.Errorf("%s %s: %w", mode, s.name, err)
				}
				res[s.name] = append(res[s.name], out)
			}
		}
		peer := res[systems[2].name]
		for _, s := range systems {
			rs := res[s.name]
			printRow(mode, s.name, rs)
			if s.kind == "dtm" {
				continue
			}
			row := spread.NewRow(mode+": "+s.name+" vs DTM, txn/s", median(rs, tps), median(peer, tps),
				spread.Ratios(vals(rs, tps), vals(peer, tps)), errCount(rs)+errCount(peer))
			row.Note = "global transactions per second, phase two waited for; two branches of two SQL statements each"
			rows = append(rows, row)
		}
	}
	spread.Print("txn", "DTM v1.19.0", rows, map[string]any{"conc": conc, "seconds": d.Seconds()})
	return nil
}

// buildDTM builds DTM v1.19.0 as its own module pins it (its go.mod and
// go.sum, fetched from the module proxy): built inside the bench module,
// its service-discovery drivers meet a newer gRPC than they compile with.
func buildDTM(dir string) (string, error) {
	fmt.Fprintln(os.Stderr, "building DTM v1.19.0 from the module proxy …")
	out, err := exec.Command("go", "mod", "download", "-json", "github.com/dtm-labs/dtm@v1.19.0").Output()
	if err != nil {
		return "", fmt.Errorf("download DTM: %w", err)
	}
	var m struct{ Dir string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		return "", fmt.Errorf("download DTM: %s", out)
	}
	bin := filepath.Join(dir, "dtm")
	b := exec.Command("go", "build", "-o", bin, ".")
	b.Dir = m.Dir
	b.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	b.Stderr = os.Stderr
	if err := b.Run(); err != nil {
		return "", fmt.Errorf("build DTM: %w", err)
	}
	return bin, nil
}

func tps(r result) float64 { return r.tps }

func vals(rs []result, f func(result) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

func median(rs []result, f func(result) float64) float64 {
	return spread.Summarise(vals(rs, f)).Median
}

func errCount(rs []result) int {
	n := 0
	for _, r := range rs {
		n += r.errs
	}
	return n
}

func printRow(mode, name string, rs []result) {
	e := errCount(rs)
	es := strconv.Itoa(e)
	for _, r := range rs {
		if r.firstErr != "" {
			es += " (" + r.firstErr + ")"
			break
		}
	}
	left := 0
	for _, r := range rs {
		left += r.inDoubt
	}
	fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %d | %s |\n", mode, name,
		spread.Summarise(vals(rs, tps)).Format("%.0f"),
		spread.Summarise(vals(rs, func(r result) float64 { return r.p50 })).Format("%.1f"),
		spread.Summarise(vals(rs, func(r result) float64 { return r.p99 })).Format("%.1f"),
		spread.Summarise(vals(rs, func(r result) float64 { return r.slowest })).Format("%.0f"),
		spread.Summarise(vals(rs, func(r result) float64 { return r.cpuPer1k })).Format("%.0f"), left, es)
}

// drive runs conc workers calling one(worker) for d: throughput counts
// the transactions finished within d; every failed one is an error, even
// one that ends after d (a call stuck past the window costs its worker the
// rest of the window, and shows in the slowest column).
// warmUp runs the workload unmeasured for half the measurement (at most
// 2 s): every system's first transactions open connections (a new
// PostgreSQL backend each) and prepare statements, and in a 2 s
// measurement those few hundred milliseconds were its p99.
func warmUp(d time.Duration, conc int, one func(ctx context.Context, w int) error) {
	warm := time.Now().Add(min(d/2, 2*time.Second))
	var wg sync.WaitGroup
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(warm) {
				cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
				_ = one(cctx, w)
				ccancel()
			}
		}()
	}
	wg.Wait()
}

func drive(d time.Duration, conc int, one func(ctx context.Context, w int) error) result {
	var n, errs atomic.Int64
	var first atomic.Value
	var slowest atomic.Int64
	lat := make([][]time.Duration, conc)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				t := time.Now()
				cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := one(cctx, w)
				ccancel()
				took := time.Since(t)
				if int64(took) > slowest.Load() {
					slowest.Store(int64(took))
				}
				if err != nil {
					errs.Add(1)
					first.CompareAndSwap(nil, err.Error())
					continue
				}
				if time.Now().Before(deadline) {
					n.Add(1)
					lat[w] = append(lat[w], took)
				}
			}
		}()
	}
	wg.Wait()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	r := result{tps: float64(n.Load()) / d.Seconds(), errs: int(errs.Load()), slowest: float64(slowest.Load()) / 1e6}
	if f, ok := first.Load().(string); ok {
		if len(f) > 120 {
			f = f[:120]
		}
		r.firstErr = f
	}
	if len(all) > 0 {
		r.p50 = float64(all[len(all)/2]) / 1e6
		r.p99 = float64(all[len(all)*99/100]) / 1e6
	}
	return r
}

// driveCPU is drive, with the CPU process pid (0: none) spent per 1000
// transactions.
func driveCPU(d time.Duration, conc, pid int, one func(ctx context.Context, w int) error) result {
	quiesce()
	warmUp(d, conc, one)
	if pid == 0 {
		return drive(d, conc, one)
	}
	c0 := cpu(pid)
	r := drive(d, conc, one)
	if used := cpu(pid) - c0; r.tps > 0 {
		r.cpuPer1k = float64(used.Milliseconds()) / (r.tps * d.Seconds() / 1000)
	}
	return r
}

// quiesce runs a PostgreSQL checkpoint before each measurement, whatever
// the system measured: dropping a run's database requests a checkpoint,
// and its writes must not land inside the next system's measurement.
func quiesce() {
	db, err := sql.Open("pgx", pgURL+"/test?sslmode=disable")
	if err != nil {
		return
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CHECKPOINT"); err != nil {
		fmt.Fprintf(os.Stderr, "bench/txn: checkpoint before a measurement: %v\n", err)
	}
}

// cpu is a process's user+system CPU time so far.
func cpu(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * 10 * time.Millisecond // USER_HZ is 100
}

// ---- participants ----

// participants are two banks (databases tgbench_a and tgbench_b on
// MariaDB) served over HTTP for both systems.
type participants struct {
	dbs    [2]*sql.DB
	names  [2]string
	bar    [2]*txn.Barrier
	xa     [2]*txn.XA
	srv    *http.Server
	url    string
	atDBs  [2]*at.DB
	atMu   sync.Mutex
	accts  int
	dtmDBs [2]dtmcli.DBConf
}

type move struct {
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
}

func mysqlDSN(db string) string { return mysqlAddr + "/" + db + "?interpolateParams=false" }

func newParticipants(accts int) (*participants, error) {
	admin, err := sql.Open("mysql", mysqlDSN(""))
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	ctx := context.Background()
	// Databases of this run's own: a branch an earlier run (or its peer)
	// left prepared keeps its rows locked, and its database undroppable.
	stamp := time.Now().Unix()
	p := &participants{names: [2]string{fmt.Sprintf("tgbench_%d_a", stamp), fmt.Sprintf("tgbench_%d_b", stamp)}, accts: accts}
	for i, name := range p.names {
		for _, q := range []string{"CREATE DATABASE " + name} {
			if _, err := admin.ExecContext(ctx, q); err != nil {
				return nil, fmt.Errorf("MariaDB at %s (set TANGRAM_BENCH_MYSQL): %w", mysqlAddr, err)
			}
		}
		if p.dbs[i], err = sql.Open("mysql", mysqlDSN(name)); err != nil {
			return nil, err
		}
		p.dbs[i].SetMaxOpenConns(4 * accts)
		p.dbs[i].SetMaxIdleConns(4 * accts)
		for _, q := range []string{
			`CREATE TABLE accounts (id VARCHAR(32) PRIMARY KEY, balance BIGINT NOT NULL)`,
			`CREATE TABLE ledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, account VARCHAR(32) NOT NULL, amount BIGINT NOT NULL, op VARCHAR(16) NOT NULL)`,
		} {
			if _, err := p.dbs[i].ExecContext(ctx, q); err != nil {
				return nil, err
			}
		}
		p.bar[i] = &txn.Barrier{DB: p.dbs[i]}
		// One participant process: phase two comes back to it, so its XA
		// keeps each prepared branch's session for the commit (Hold).
		p.xa[i] = &txn.XA{DB: p.dbs[i], Hold: 10 * time.Second}
		if err := p.bar[i].Init(ctx); err != nil {
			return nil, err
		}
		user, pass, host, port := mysqlParts()
		p.dtmDBs[i] = dtmcli.DBConf{Driver: "mysql", Host: host, Port: int64(port), User: user, Password: pass, Db: name}
	}
	// DTM's barrier table, as its sqls/dtmcli.barrier.mysql.sql makes it.
	for _, q := range []string{`CREATE DATABASE IF NOT EXISTS dtm_barrier`, `DROP TABLE IF EXISTS dtm_barrier.barrier`,
		`CREATE TABLE dtm_barrier.barrier (id BIGINT PRIMARY KEY AUTO_INCREMENT, trans_type VARCHAR(45) DEFAULT '', gid VARCHAR(128) DEFAULT '',
  branch_id VARCHAR(128) DEFAULT '', op VARCHAR(45) DEFAULT '', barrier_id VARCHAR(45) DEFAULT '', reason VARCHAR(45) DEFAULT '',
  create_time DATETIME DEFAULT NOW(), update_time DATETIME DEFAULT NOW(), KEY(create_time), KEY(update_time),
  UNIQUE KEY(gid, branch_id, op, barrier_id)) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4`} {
		if _, err := admin.ExecContext(ctx, q); err != nil {
			if me := (*mysql.MySQLError)(nil); errors.As(err, &me) && me.Number == 1205 { // lock wait timeout
				err = fmt.Errorf("%w (a prepared XA branch an earlier run left holds it: restart MariaDB, then XA ROLLBACK each branch XA RECOVER lists)", err)
			}
			return nil, fmt.Errorf("DTM barrier table: %w", err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.url = "http://" + ln.Addr().String()
	p.srv = &http.Server{Handler: p.mux(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// newAccounts gives a measurement accounts of its own in both banks (a
// row a previous system left locked — a branch it left prepared — does
// not slow the next), returning their prefix.
func (p *participants) newAccounts(conc int) (string, error) {
	pre := fmt.Sprintf("r%d-", runs.Add(1))
	for i := range p.dbs {
		for w := range conc {
			if _, err := p.dbs[i].Exec(`INSERT INTO accounts (id, balance) VALUES (?, 1000000000)`, pre+strconv.Itoa(w)); err != nil {
				return "", err
			}
		}
	}
	return pre, nil
}

// sweep rolls back the XA branches left prepared on MariaDB by the
// transactions issued (ours: XID and branch 0 or 1; DTM's: gid-01 and
// gid-02) and returns how many there were: a coordinator should leave
// none. Each is rolled back by name rather than found with XA RECOVER,
// which here did not always list a branch whose session had died.
func (p *participants) sweep(issued *sync.Map, mode string) int {
	if mode != "xa" {
		return 0
	}
	n := 0
	issued.Range(func(k, v any) bool {
		g := k.(string)
		names := []string{"'" + g + "','0'", "'" + g + "','1'"}
		if v == "dtm" {
			names = []string{"'" + g + "-01'", "'" + g + "-02'"}
		}
		for _, name := range names {
			if _, err := p.dbs[0].Exec("XA ROLLBACK " + name); err == nil {
				n++
			}
		}
		return true
	})
	return n
}

func (p *participants) close() {
	_ = p.srv.Close()
	for i := range p.dbs {
		_ = p.xa[i].Close()
		if p.atDBs[i] != nil {
			_ = p.atDBs[i].Close()
		}
		c, err := p.dbs[i].Conn(context.Background())
		if err == nil {
			_, _ = c.ExecContext(context.Background(), "SET SESSION lock_wait_timeout = 5")
			if _, err := c.ExecContext(context.Background(), "DROP DATABASE "+p.names[i]); err != nil {
				fmt.Fprintf(os.Stderr, "bench/txn: drop %s (a branch left prepared still locks it; XA RECOVER shows it): %v\n", p.names[i], err)
			}
			c.Close()
		}
		_ = p.dbs[i].Close()
	}
}

// work is a branch operation's two statements.
func work(ctx context.Context, ex interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, m move, op string) error {
	if _, err := ex.ExecContext(ctx, `UPDATE accounts SET balance = balance + ? WHERE id = ?`, m.Amount, m.Account); err != nil {
		return err
	}
	_, err := ex.ExecContext(ctx, `INSERT INTO ledger (account, amount, op) VALUES (?, ?, ?)`, m.Account, m.Amount, op)
	return err
}

func (p *participants) mux() *http.ServeMux {
	mux := http.NewServeMux()
	body := func(r *http.Request) (move, error) {
		var m move
		err := json.NewDecoder(r.Body).Decode(&m)
		return m, err
	}
	for i := range 2 {
		bank := strconv.Itoa(i)
		// Ours: saga and TCC operations behind txn.Barrier, XA through txn.XA.
		mux.HandleFunc("POST /tg/"+bank+"/op/{op}", func(w http.ResponseWriter, r *http.Request) {
			bi, err := txn.BranchFromRequest(r)
			if err != nil {
				txn.WriteResult(w, err)
				return
			}
			m, err := body(r)
			if err != nil {
				txn.WriteResult(w, fmt.Errorf("%w: %v", txn.ErrBadRequest, err))
				return
			}
			op := r.PathValue("op")
			txn.WriteResult(w, p.bar[i].Call(r.Context(), bi, func(tx *sql.Tx) error { return work(r.Context(), tx, m, op) }))
		})
		mux.HandleFunc("POST /tg/"+bank+"/xa", func(w http.ResponseWriter, r *http.Request) {
			bi, err := txn.BranchFromRequest(r)
			if err != nil {
				txn.WriteResult(w, err)
				return
			}
			m, _ := body(r)
			txn.WriteResult(w, p.xa[i].Serve(r.Context(), bi, func(ctx context.Context, c *sql.Conn) error { return work(ctx, c, m, "xa") }))
		})
		// DTM: the same operations behind its barrier and its XA.
		mux.HandleFunc("POST /dtm/"+bank+"/op/{op}", func(w http.ResponseWriter, r *http.Request) {
			m, err := body(r)
			if err == nil {
				var bb *dtmcli.BranchBarrier
				if bb, err = dtmcli.BarrierFromQuery(r.URL.Query()); err == nil {
					op := r.PathValue("op")
					err = bb.CallWithDB(p.dbs[i], func(tx *sql.Tx) error { return work(r.Context(), tx, m, op) })
				}
			}
			dtmResult(w, err)
		})
		mux.HandleFunc("POST /dtm/"+bank+"/xa", func(w http.ResponseWriter, r *http.Request) {
			m, _ := body(r)
			dtmResult(w, dtmcli.XaLocalTransaction(r.URL.Query(), p.dtmDBs[i], func(db *sql.DB, _ *dtmcli.Xa) error {
				return work(r.Context(), db, m, "xa")
			}))
		})
	}
	mux.HandleFunc("POST /at/{bank}", func(w http.ResponseWriter, r *http.Request) {
		i, _ := strconv.Atoi(r.PathValue("bank"))
		p.atMu.Lock()
		adb := p.atDBs[i%2]
		p.atMu.Unlock()
		if adb == nil {
			http.Error(w, "no AT database", http.StatusServiceUnavailable)
			return
		}
		adb.Handler().ServeHTTP(w, r)
	})
	return mux
}

func dtmResult(w http.ResponseWriter, err error) {
	code, res := dtmcli.Result2HttpJSON(err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(res)
}

func (p *participants) u(sys string, bank int, rest string) string {
	return p.url + "/" + sys + "/" + strconv.Itoa(bank) + rest
}

// ---- coordinators ----

type system struct {
	name, kind, store string
}

var runs atomic.Int64

func (s *system) measure(bin, dtmBin, dir string, p *participants, mode string, d time.Duration, conc int) (result, error) {
	if s.kind == "dtm" {
		return measureDTM(dtmBin, dir, p, mode, d, conc)
	}
	srv, c, err := startTangram(bin, dir, s.store, conc)
	if err != nil {
		return result{}, err
	}
	defer srv.stop()
	defer c.Close()
	opts := txn.Options{}
	pre, err := p.newAccounts(conc)
	if err != nil {
		return result{}, err
	}
	var issued sync.Map
	one := func(ctx context.Context, w int) error {
		acct := pre + strconv.Itoa(w)
		debit, credit := move{Account: acct, Amount: -1}, move{Account: acct, Amount: 1}
		var g txn.Global
		var err error
		switch mode {
		case "saga":
			g, err = c.NewSaga(opts).Add(p.u("tg", 0, "/op/action"), p.u("tg", 0, "/op/compensate"), debit).
				Add(p.u("tg", 1, "/op/action"), p.u("tg", 1, "/op/compensate"), credit).Submit(ctx, true)
		case "tcc":
			g, err = c.TCC(ctx, opts, true, func(ctx context.Context, t *txn.Txn) error {
				if err := t.Branch(ctx, p.u("tg", 0, "/op/try"), p.u("tg", 0, "/op/confirm"), p.u("tg", 0, "/op/cancel"), debit); err != nil {
					return err
				}
				return t.Branch(ctx, p.u("tg", 1, "/op/try"), p.u("tg", 1, "/op/confirm"), p.u("tg", 1, "/op/cancel"), credit)
			})
		case "xa":
			g, err = c.XA(ctx, opts, true, func(ctx context.Context, t *txn.Txn) error {
				issued.Store(t.XID(), true)
				if err := t.XABranch(ctx, p.u("tg", 0, "/xa"), debit); err != nil {
					return err
				}
				return t.XABranch(ctx, p.u("tg", 1, "/xa"), credit)
			})
		default:
			return fmt.Errorf("mode %q", mode)
		}
		if err == nil && g.Status != txn.StatusCommitted {
			err = fmt.Errorf("ended %s: %s", g.Status, g.Reason)
		}
		return err
	}
	r := driveCPU(d, conc, srv.cmd.Process.Pid, one)
	srv.stop()
	r.inDoubt = p.sweep(&issued, mode)
	return r, nil
}

type proc struct {
	cmd  *exec.Cmd
	drop func()
	once sync.Once
}

func (p *proc) stop() { p.once.Do(p.halt) }

func (p *proc) halt() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	if p.drop != nil {
		p.drop()
	}
}

// startTangram runs a tangram server with only the txn component, its
// store a fresh database.
// debugAddr, when set (-pprof), is where the tangram server serves pprof.
var debugAddr string

func startTangram(bin, dir, store string, conc int) (*proc, *txn.Client, error) {
	httpAddr, err1 := tangrambin.FreeAddr()
	rpcAddr, err2 := tangrambin.FreeAddr()
	if err1 != nil || err2 != nil {
		return nil, nil, fmt.Errorf("ports: %v %v", err1, err2)
	}
	name := fmt.Sprintf("tgbench_store_%d", runs.Add(1))
	var storeURL string
	var drop func()
	switch store {
	case "postgres":
		admin, err := sql.Open("pgx", pgURL+"/test?sslmode=disable")
		if err != nil {
			return nil, nil, err
		}
		if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
			admin.Close()
			return nil, nil, fmt.Errorf("PostgreSQL at %s (set TANGRAM_BENCH_POSTGRES): %w", pgURL, err)
		}
		storeURL = pgURL + "/" + name + "?sslmode=disable"
		drop = func() { _, _ = admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)"); admin.Close() }
	default:
		admin, err := sql.Open("mysql", mysqlDSN(""))
		if err != nil {
			return nil, nil, err
		}
		if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
			admin.Close()
			return nil, nil, err
		}
		user, pass, host, port := mysqlParts()
		cred := user
		if pass != "" {
			cred += ":" + url.UserPassword(user, pass).String()[len(user)+1:]
		}
		storeURL = fmt.Sprintf("mysql://%s@%s/%s", cred, net.JoinHostPort(host, strconv.Itoa(port)), name)
		drop = func() { _, _ = admin.Exec("DROP DATABASE IF EXISTS " + name); admin.Close() }
	}
	cmd := exec.Command(bin, "server", "--http", httpAddr, "--rpc", rpcAddr, "--broker", "off", "--kv", "off", "--otlp-http", "off", "--otlp-grpc", "off",
		"--components", "txn", "--data", filepath.Join(dir, name), "--store", storeURL, "--log-level", "error")
	if debugAddr != "" {
		cmd.Args = append(cmd.Args, "--debug-addr", debugAddr)
	}
	cmd.Env = append(os.Environ(), "TANGRAM_BOOTSTRAP_TOKEN="+token)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		drop()
		return nil, nil, err
	}
	pr := &proc{cmd: cmd, drop: drop}
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := txn.Dial(context.Background(), txn.Config{Servers: []string{rpcAddr}, Token: token, App: "bench", Logger: quiet,
			HTTPClient: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4 * conc}}})
		if err == nil {
			if _, err = c.List(context.Background(), txn.ListRequest{Limit: 1}); err == nil {
				return pr, c, nil
			}
			c.Close()
		}
		if time.Now().After(deadline) {
			pr.stop()
			return nil, nil, fmt.Errorf("tangram server did not start: %w", err)
		}
		time.Sleep(100 * time.Millisecond) // it is starting
	}
}

// measureDTM runs DTM with MySQL storage on MariaDB (its tables made
// afresh from its sqls/dtmsvr.storage.mysql.sql) and measures one mode.
func measureDTM(dtmBin, dir string, p *participants, mode string, d time.Duration, conc int) (result, error) {
	ports := make([]int, 3)
	for i := range ports {
		a, err := tangrambin.FreeAddr()
		if err != nil {
			return result{}, err
		}
		_, ps, _ := net.SplitHostPort(a)
		ports[i], _ = strconv.Atoi(ps)
	}
	if err := dtmSchema(); err != nil {
		return result{}, err
	}
	conf := p.dtmDBs[0]
	cfg := fmt.Sprintf("Store:\n  Driver: 'mysql'\n  Host: '%s'\n  User: '%s'\n  Password: '%s'\n  Port: %d\n  Db: 'dtm'\nHttpPort: %d\nGrpcPort: %d\nJsonRpcPort: %d\nLogLevel: 'error'\n",
		conf.Host, conf.User, conf.Password, conf.Port, ports[0], ports[1], ports[2])
	cfgFile := filepath.Join(dir, fmt.Sprintf("dtm-%d.yml", runs.Add(1)))
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return result{}, err
	}
	cmd := exec.Command(dtmBin, "-c", cfgFile)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	pr := &proc{cmd: cmd}
	defer pr.stop()
	server := fmt.Sprintf("http://127.0.0.1:%d/api/dtmsvr", ports[0])
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(server + "/newGid")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			return result{}, fmt.Errorf("DTM did not start: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // it is starting
	}
	dtmcli.GetRestyClient().SetTimeout(30 * time.Second)
	pre, err := p.newAccounts(conc)
	if err != nil {
		return result{}, err
	}
	var issued sync.Map
	one := func(ctx context.Context, w int) error {
		acct := pre + strconv.Itoa(w)
		debit, credit := move{Account: acct, Amount: -1}, move{Account: acct, Amount: 1}
		gid := newGID()
		if mode == "xa" {
			issued.Store(gid, "dtm")
		}
		switch mode {
		case "saga":
			s := dtmcli.NewSaga(server, gid).Add(p.u("dtm", 0, "/op/action"), p.u("dtm", 0, "/op/compensate"), debit).
				Add(p.u("dtm", 1, "/op/action"), p.u("dtm", 1, "/op/compensate"), credit)
			s.WaitResult = true
			return s.Submit()
		case "tcc":
			return dtmcli.TccGlobalTransaction2(server, gid, func(t *dtmcli.Tcc) { t.WaitResult = true }, func(t *dtmcli.Tcc) (*resty.Response, error) {
				if r, err := t.CallBranch(debit, p.u("dtm", 0, "/op/try"), p.u("dtm", 0, "/op/confirm"), p.u("dtm", 0, "/op/cancel")); err != nil {
					return r, err
				}
				return t.CallBranch(credit, p.u("dtm", 1, "/op/try"), p.u("dtm", 1, "/op/confirm"), p.u("dtm", 1, "/op/cancel"))
			})
		case "xa":
			return dtmcli.XaGlobalTransaction2(server, gid, func(x *dtmcli.Xa) { x.WaitResult = true }, func(x *dtmcli.Xa) (*resty.Response, error) {
				if r, err := x.CallBranch(debit, p.u("dtm", 0, "/xa")); err != nil {
					return r, err
				}
				return x.CallBranch(credit, p.u("dtm", 1, "/xa"))
			})
		}
		return fmt.Errorf("mode %q", mode)
	}
	r := driveCPU(d, conc, cmd.Process.Pid, one)
	pr.stop()
	r.inDoubt = p.sweep(&issued, mode)
	return r, nil
}

// dtmSchema makes DTM's storage tables afresh from the SQL file its
// module ships.
func dtmSchema() error {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/dtm-labs/dtm").Output()
	if err != nil {
		return fmt.Errorf("locate the DTM module: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "sqls", "dtmsvr.storage.mysql.sql"))
	if err != nil {
		return err
	}
	db, err := sql.Open("mysql", mysqlDSN("")+"&multiStatements=true")
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.Exec(string(b)); err != nil {
		return fmt.Errorf("DTM storage schema: %w", err)
	}
	return nil
}

// ---- AT ----

// measureAT compares the same two local transactions (each an UPDATE and
// an INSERT, one per bank) run plainly and as the branches of an AT
// global transaction (the commit decision waited for, phase two
// asynchronous as AT is designed).
func measureAT(bin, dir string, p *participants, d time.Duration, rounds, conc int) []spread.Row {
	srv, c, err := startTangram(bin, dir, "postgres", conc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "at:", err)
		return nil
	}
	defer srv.stop()
	defer c.Close()
	for i := range 2 {
		adb, err := at.Open("mysql", mysqlDSN(p.names[i]), at.Config{Coordinator: c, Resource: p.names[i], URL: p.u("at", i, ""), Logger: quiet})
		if err != nil {
			fmt.Fprintln(os.Stderr, "at:", err)
			return nil
		}
		adb.SetMaxOpenConns(4 * conc)
		adb.SetMaxIdleConns(4 * conc)
		if err := adb.Init(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "at:", err)
			return nil
		}
		p.atMu.Lock()
		p.atDBs[i] = adb
		p.atMu.Unlock()
	}
	local := func(ctx context.Context, db *sql.DB, m move) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := work(ctx, tx, m, "at"); err != nil {
			_ = tx.Rollback()
			return err
		}
		return tx.Commit()
	}
	pre, err := p.newAccounts(conc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "at:", err)
		return nil
	}
	plain := func(ctx context.Context, w int) error {
		acct := pre + strconv.Itoa(w)
		if err := local(ctx, p.dbs[0], move{Account: acct, Amount: -1}); err != nil {
			return err
		}
		return local(ctx, p.dbs[1], move{Account: acct, Amount: 1})
	}
	global := func(ctx context.Context, w int) error {
		acct := pre + strconv.Itoa(w)
		_, err := c.AT(ctx, txn.Options{}, false, func(ctx context.Context, _ *txn.Txn) error {
			if err := local(ctx, p.atDBs[0].DB, move{Account: acct, Amount: -1}); err != nil {
				return err
			}
			return local(ctx, p.atDBs[1].DB, move{Account: acct, Amount: 1})
		})
		return err
	}
	type sys struct {
		name string
		fn   func(context.Context, int) error
		pid  int
	}
	systems := []sys{{"plain local transactions", plain, 0}, {"AT global transaction (tangram, PostgreSQL store)", global, srv.cmd.Process.Pid}}
	res := map[string][]result{}
	for r := range rounds {
		for _, s := range spread.Order(systems, r) {
			fmt.Fprintf(os.Stderr, "at round %d: %s …\n", r+1, s.name)
			out := driveCPU(d, conc, s.pid, s.fn)
			res[s.name] = append(res[s.name], out)
		}
	}
	for _, s := range systems {
		printRow("at", s.name, res[s.name])
	}
	ours, peer := res[systems[1].name], res[systems[0].name]
	row := spread.NewRow("at: AT global transaction vs the same local transactions, txn/s", median(ours, tps), median(peer, tps),
		spread.Ratios(vals(ours, tps), vals(peer, tps)), errCount(ours)+errCount(peer))
	row.Note = "ratio of throughputs: 1 - ratio is AT's overhead (goal: under 30%)"
	return []spread.Row{row}
}

func newGID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// mysqlParts splits TANGRAM_BENCH_MYSQL (user[:password]@tcp(host:port)).
func mysqlParts() (user, pass, host string, port int) {
	cred, addr, _ := strings.Cut(mysqlAddr, "@")
	user, pass, _ = strings.Cut(cred, ":")
	addr = strings.TrimSuffix(strings.TrimPrefix(addr, "tcp("), ")")
	h, ps, _ := net.SplitHostPort(addr)
	port, _ = strconv.Atoi(ps)
	return user, pass, h, port
}
