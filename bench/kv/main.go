// Command kv benchmarks tangram kv against Redis 7 with redis-benchmark,
// the tool Redis's users measure with: both servers started by this
// program as separate processes, one at a time, on loopback, with the same
// persistence (an append-only log with fsync everysec on both, then both
// without persistence), taking turns going first over -rounds rounds. For
// each command (SET, GET, INCR, LPUSH, LPOP, SADD, HSET, ZADD, MSET of 10
// keys) it runs 50 connections unpipelined and with -P 16, 100-byte values
// and 1M random keys, and reports requests/s and p50/p99 from
// redis-benchmark's CSV, the ratio ours/Redis, and resident memory per key
// with 1M keys of 100 bytes. The machine's cores are shared by
// redis-benchmark and the server measured; nothing is pinned (see -pin).
//
//	go run ./bench/kv [-quick] [-rounds 3]
package main

import (
	"bufio"
	"encoding/csv"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tangram-dev/tangram/bench/internal/spread"
	"github.com/tangram-dev/tangram/kv/resp"
)

type system struct {
	name  string
	start func(dir, port string, persist bool) (*exec.Cmd, error)
}

func main() {
	quick := flag.Bool("quick", false, "short run (< 60 s)")
	rounds := flag.Int("rounds", 3, "rounds (systems alternate going first)")
	pin := flag.Bool("pin", false, "pin the server to CPU 1 and redis-benchmark to CPU 0 (taskset)")
	memOnly := flag.Bool("mem", false, "only the memory comparison (1M keys, or 200k with -quick)")
	flag.Parse()
	if *quick {
		*rounds = 3
	}
	n, nP := 100000, 1000000
	tests := "set,get,incr,lpush,lpop,sadd,hset,zadd,mset"
	modes := []bool{true, false}
	if *quick {
		n, nP = 20000, 100000
		modes = []bool{true}
	}
	work, err := os.MkdirTemp("", "bench-kv-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(work)
	bin := filepath.Join(work, "tangram")
	fmt.Fprintln(os.Stderr, "building tangram…")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/tangram-dev/tangram/cmd/tangram").CombinedOutput(); err != nil {
		fail(fmt.Errorf("build: %v\n%s", err, out))
	}
	redisVer := "unknown"
	if out, err := exec.Command("redis-server", "--version").Output(); err == nil {
		redisVer = strings.TrimSpace(string(out))
	}
	taskset := func(cpu string, args ...string) []string {
		if *pin {
			return append([]string{"taskset", "-c", cpu}, args...)
		}
		return args
	}
	ours := system{"kv", func(dir, port string, persist bool) (*exec.Cmd, error) {
		args := []string{bin, "kv", "--listen", "127.0.0.1:" + port, "--dir", dir, "--log-level", "warn"}
		if !persist {
			args = append(args, "--no-persist")
		}
		args = taskset("1", args...)
		return run(args...)
	}}
	redis := system{"redis", func(dir, port string, persist bool) (*exec.Cmd, error) {
		args := []string{"redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--daemonize", "no", "--loglevel", "warning"}
		if persist {
			args = append(args, "--appendonly", "yes", "--appendfsync", "everysec")
		} else {
			args = append(args, "--appendonly", "no")
		}
		args = taskset("1", args...)
		return run(args...)
	}}
	systems := []system{ours, redis}
	type key struct{ mode, test, sys string }
	rps := map[key][]float64{}
	p50 := map[key][]float64{}
	p99 := map[key][]float64{}
	var order []string
	errs := map[string]int{}
	if *memOnly {
		modes = nil
	}
	for _, persist := range modes {
		mode := "aof-everysec"
		if !persist {
			mode = "no-persistence"
		}
		for r := 0; r < *rounds; r++ {
			for _, sys := range spread.Order(systems, r) {
				for _, pipe := range []int{1, 16} {
					dir, _ := os.MkdirTemp(work, sys.name+"-")
					port := freePort()
					cmd, err := sys.start(dir, port, persist)
					if err != nil {
						fail(err)
					}
					if err := waitUp("127.0.0.1:" + port); err != nil {
						fail(fmt.Errorf("%s: %w", sys.name, err))
					}
					count := n
					if pipe > 1 {
						count = nP
					}
					fmt.Fprintf(os.Stderr, "%s round %d: %s -P %d …\n", mode, r+1, sys.name, pipe)
					args := taskset("0", "redis-benchmark", "-h", "127.0.0.1", "-p", port, "-c", "50", "-n", strconv.Itoa(count),
						"-r", "1000000", "-d", "100", "-P", strconv.Itoa(pipe), "-t", tests, "--csv")
					out, err := exec.Command(args[0], args[1:]...).Output()
					stop(cmd)
					os.RemoveAll(dir)
					if err != nil {
						errs[mode+"/"+sys.name]++
						fmt.Fprintf(os.Stderr, "redis-benchmark against %s: %v\n", sys.name, err)
						continue
					}
					recs, err := csv.NewReader(strings.NewReader(string(out))).ReadAll()
					if err != nil {
						fail(err)
					}
					for _, rec := range recs[1:] {
						if len(rec) < 7 {
							continue
						}
						test := strings.ToLower(strings.Fields(rec[0])[0])
						name := fmt.Sprintf("%s-c50", test)
						if pipe > 1 {
							name += "-P16"
						}
						k := key{mode, name, sys.name}
						if !contains(order, mode+"|"+name) {
							order = append(order, mode+"|"+name)
						}
						rps[k] = append(rps[k], atof(rec[1]))
						p50[k] = append(p50[k], atof(rec[4]))
						p99[k] = append(p99[k], atof(rec[6]))
					}
				}
			}
		}
	}
	// Memory: 1M keys of 100 bytes, no persistence, each server fresh.
	mem := map[string][]float64{}
	memRounds := *rounds
	keys := 1000000
	if *quick {
		keys = 200000
		memRounds = 1
	}
	for r := 0; r < memRounds; r++ {
		for _, sys := range spread.Order(systems, r) {
			dir, _ := os.MkdirTemp(work, sys.name+"-")
			port := freePort()
			cmd, err := sys.start(dir, port, false)
			if err != nil {
				fail(err)
			}
			if err := waitUp("127.0.0.1:" + port); err != nil {
				fail(err)
			}
			base := rssOf(cmd.Process.Pid)
			if err := load("127.0.0.1:"+port, keys); err != nil {
				fail(fmt.Errorf("load %s: %w", sys.name, err))
			}
			time.Sleep(2 * time.Second) // let a collector finish before reading RSS
			mem[sys.name] = append(mem[sys.name], float64(rssOf(cmd.Process.Pid)-base)/float64(keys))
			stop(cmd)
			os.RemoveAll(dir)
		}
	}

	fmt.Printf("tangram kv vs %s — redis-benchmark -c 50 -d 100 -r 1000000, %d rounds, alternating; pinned: %v\n", redisVer, *rounds, *pin)
	fmt.Printf("%-15s %-13s %22s %22s %18s %18s %18s\n", "mode", "case", "kv req/s", "redis req/s", "ratio", "p50 ms kv/redis", "p99 ms kv/redis")
	var rows []spread.Row
	for _, mk := range order {
		parts := strings.SplitN(mk, "|", 2)
		mode, name := parts[0], parts[1]
		ko, kr := key{mode, name, "kv"}, key{mode, name, "redis"}
		ratios := spread.Ratios(rps[ko], rps[kr])
		row := spread.NewRow(mode+"/"+name, spread.Summarise(rps[ko]), spread.Summarise(rps[kr]), ratios, errs[mode+"/kv"]+errs[mode+"/redis"])
		rows = append(rows, row)
		fmt.Printf("%-15s %-13s %22s %22s %18s %18s %18s\n", mode, name, spread.Summarise(rps[ko]).Format("%.0f"), spread.Summarise(rps[kr]).Format("%.0f"),
			spread.Summarise(ratios).Format("%.2f"),
			fmt.Sprintf("%.3f/%.3f", spread.Summarise(p50[ko]).Median, spread.Summarise(p50[kr]).Median),
			fmt.Sprintf("%.3f/%.3f", spread.Summarise(p99[ko]).Median, spread.Summarise(p99[kr]).Median))
	}
	mk, mr := spread.Summarise(mem["kv"]), spread.Summarise(mem["redis"])
	fmt.Printf("RSS per key (%d keys of 100 bytes): kv %s B, redis %s B, kv/redis %.2f (goal ≤ 1.3)\n", keys, mk.Format("%.0f"), mr.Format("%.0f"), mk.Median/mr.Median)
	rows = append(rows, spread.Row{Case: "rss-per-key", Ours: mk, Peer: mr, Ratio: math.Round(mr.Median/mk.Median*100) / 100, Note: "peer/ours: above 1 means kv uses less"})
	spread.Print("kv", redisVer, rows, map[string]any{"quick": *quick, "pinned": *pin})
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

func atof(s string) float64 {
	f, _ := strconv.ParseFloat(strings.TrimSpace(s), 64)
	return f
}

func run(args ...string) (*exec.Cmd, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd, cmd.Start()
}

func stop(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func waitUp(addr string) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Write([]byte("PING\r\n"))
			c.SetReadDeadline(time.Now().Add(time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err == nil && strings.HasPrefix(line, "+PONG") {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer PING", addr)
}

// load writes keys SETs of 100-byte values, pipelined 1000 at a time.
func load(addr string, keys int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	br := bufio.NewReaderSize(c, 1<<16)
	val := []byte(strings.Repeat("x", 100))
	var buf []byte
	for i := 0; i < keys; i += 1000 {
		buf = buf[:0]
		m := min(1000, keys-i)
		for j := 0; j < m; j++ {
			buf = resp.AppendCommand(buf, []byte("SET"), []byte(fmt.Sprintf("key:%012d", i+j)), val)
		}
		if _, err := c.Write(buf); err != nil {
			return err
		}
		for j := 0; j < m; j++ {
			line, err := br.ReadString('\n')
			if err != nil {
				return err
			}
			if !strings.HasPrefix(line, "+OK") {
				return fmt.Errorf("SET: %q", line)
			}
		}
	}
	return nil
}

func rssOf(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench/kv:", err)
	os.Exit(1)
}
