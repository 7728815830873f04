package main

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/bench/internal/spread"
	"github.com/tangram-dev/tangram/bench/internal/tangrambin"
)

// trial is one rate tried with k budgeted servers.
type trial struct {
	rate int
	res  result
	ok   bool
}

// runScaleout finds, for each server count, the highest trigger rate that
// CPU-budgeted servers hold: p99 lateness under goal and nothing missed,
// double or early. Rates climb by an eighth while they hold (down while
// they do not); the highest that held is then run twice more, and counts
// only if the median of its three runs holds too (else the next lower is
// confirmed the same way).
func runScaleout(period, measure time.Duration, bin string, cpus float64, cfsPeriod time.Duration, counts string, goal time.Duration) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("-scaleout puts each server in a cgroup: run it as root")
	}
	dir, err := os.MkdirTemp("", "bench-job-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if bin, err = tangrambin.Build(dir, bin); err != nil {
		return err
	}
	bud := &budget{cpus: cpus, period: cfsPeriod}
	holds := func(r result) bool {
		return r.P99 < float64(goal)/1e6 && r.Missed == 0 && r.Double == 0 && r.Early == 0 && r.Executed > 0
	}
	try := func(k, rate int) (trial, error) {
		n := rate * int(period/time.Second)
		fmt.Fprintf(os.Stderr, "%d server(s) × %.2g CPU: %d triggers/s (%d jobs every %v) …\n", k, cpus, rate, n, period)
		r, err := measureTangram(bin, dir, k, n, period, measure, bud)
		if err != nil {
			return trial{}, err
		}
		t := trial{rate: rate, res: r, ok: holds(r)}
		fmt.Fprintf(os.Stderr, "  p50 %.2f ms p99 %.2f ms max %.2f ms missed %d double %d early %d; servers %.2f CPU, PostgreSQL %.2f CPU → %v\n",
			r.P50, r.P99, r.Max, r.Missed, r.Double, r.Early, r.ServerCPU, r.DBCPU, map[bool]string{true: "holds", false: "does not hold"}[t.ok])
		return t, nil
	}
	step := func(rate int, up bool) int {
		if up {
			return int(math.Ceil(float64(rate)*1.125/25) * 25)
		}
		return max(25, int(float64(rate)/1.125/25)*25)
	}
	type capacity struct {
		servers int
		rate    int
		runs    []result
		tried   []trial
	}
	var caps []capacity
	start := int(math.Max(100, cpus*1000))
	for _, f := range strings.Split(counts, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || k < 1 {
			return fmt.Errorf("-counts %q: want counts such as 1,2,3", counts)
		}
		c := capacity{servers: k}
		rate := start
		if len(caps) > 0 && caps[len(caps)-1].rate > 0 {
			rate = caps[len(caps)-1].rate * k / caps[len(caps)-1].servers // expect linear; the search corrects it
		}
		best := 0
		for steps := 0; steps < 12; steps++ {
			t, err := try(k, rate)
			if err != nil {
				return err
			}
			c.tried = append(c.tried, t)
			if t.ok {
				best = max(best, rate)
				next := step(rate, true)
				if failedAt(c.tried, next) {
					break
				}
				rate = next
				continue
			}
			if best > 0 {
				break
			}
			rate = step(rate, false)
			if rate == 25 && failedAt(c.tried, 25) {
				break
			}
		}
		// Confirm: two more runs at the best rate; the median must hold.
		for best > 0 {
			runs := []result{}
			for _, t := range c.tried {
				if t.rate == best && t.ok {
					runs = append(runs, t.res)
					break
				}
			}
			for len(runs) < 3 {
				t, err := try(k, best)
				if err != nil {
					return err
				}
				c.tried = append(c.tried, t) // shown with the ladder's
				runs = append(runs, t.res)
			}
			m := median(runs)
			if holds(*m) {
				c.rate, c.runs = best, runs
				break
			}
			if best == 25 {
				break // nothing held
			}
			best = step(best, false)
		}
		caps = append(caps, c)
	}
	fmt.Printf("\nbench/job -scaleout: each tangram server in a cgroup of %.2g CPU (CFS quota %v per %v); PostgreSQL and the executor unbudgeted; %d CPUs in all; %v measured per run; a rate holds with p99 lateness < %v and 0 missed, double or early (median of 3 runs)\n\n",
		cpus, time.Duration(float64(cfsPeriod)*cpus), cfsPeriod, runtime.NumCPU(), measure, goal)
	fmt.Println("| servers | highest rate held | × one server | p50 | p99 | max | servers' CPU | PostgreSQL CPU | rates tried (✓ held) |")
	fmt.Println("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
	var rows []spread.Row
	one := 0
	for _, c := range caps {
		var tried []string
		for _, t := range c.tried {
			if t.res.Expected == 0 {
				continue
			}
			mark := "✗"
			if t.ok {
				mark = "✓"
			}
			tried = append(tried, fmt.Sprintf("%d%s", t.rate, mark))
		}
		if c.servers == 1 {
			one = c.rate
		}
		scale := math.NaN()
		if one > 0 {
			scale = float64(c.rate) / float64(one)
		}
		pickF := func(f func(result) float64) spread.Of { return spread.Summarise(pick(c.runs, f)) }
		fmt.Printf("| %d | %d/s | %.2f× | %s ms | %s ms | %s ms | %s | %s | %s |\n", c.servers, c.rate, scale,
			pickF(func(r result) float64 { return r.P50 }).Format("%.2f"), pickF(func(r result) float64 { return r.P99 }).Format("%.2f"),
			pickF(func(r result) float64 { return r.Max }).Format("%.1f"), pickF(func(r result) float64 { return r.ServerCPU }).Format("%.2f"),
			pickF(func(r result) float64 { return r.DBCPU }).Format("%.2f"), strings.Join(tried, " "))
		row := spread.Row{Case: fmt.Sprintf("scaleout-%d-server-%.2gcpu", c.servers, cpus), Ours: map[string]any{"rate": c.rate, "runs": c.runs},
			Ratio: math.Round(scale*100) / 100, Rounds: len(c.runs)}
		if math.IsNaN(scale) {
			row.Ratio = 0
		}
		row.Note = "ratio: highest rate held over one server's"
		rows = append(rows, row)
	}
	spread.Print("job-scaleout", "one budgeted server", rows, map[string]any{"cpus_per_server": cpus, "goal_p99_ms": float64(goal) / 1e6})
	return nil
}

// failedAt reports whether rate was tried and did not hold.
func failedAt(ts []trial, rate int) bool {
	for _, t := range ts {
		if t.rate == rate && !t.ok {
			return true
		}
	}
	return false
}
