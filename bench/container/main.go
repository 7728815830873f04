// Command container benchmarks Tangram's container runtime against
// Debian's runc on the same OCI bundle (a busybox-static root filesystem
// and the config.json `tangram container spec` writes, which is runc's
// default set-up: PID, mount, IPC, UTS and network namespaces, the same
// mounts, masked paths, capabilities and devices; no terminal).
//
// Cases:
//   - run: create + start + wait + delete of /bin/true, one at a time —
//     `runc run` against `tangram-oci run` (the lean runtime binary a
//     containerd-style caller runs per container, as it runs runc), against
//     `tangram container run` (the same commands in the full platform
//     binary, which starts slower), and against the container package
//     called in-process (how a Go caller embeds the runtime);
//   - burst: 20 such runs at once, wall time for all 20;
//   - idle: 10 detached containers running `sleep`, the memory their
//     cgroups hold and the runtime processes left resident per container.
//
// The systems take turns going first over -rounds rounds; each figure is
// a median with its spread; ratios are runc's time over ours (above 1 is
// faster than runc). The last line is JSON. Needs root.
//
// tangram-oci is built without cgo, statically linked, as `make build`
// builds it. Debian's runc is linked dynamically (it needs libseccomp);
// runc's own release binaries are static (`make static`), and
// -runc-static names such a build to run beside the others (its run and
// burst rows, and tangram-oci's ratio against it).
//
//	go run ./bench/container           # 50 runs per round, 3 rounds
//	go run ./bench/container -quick    # 20 runs per round, 3 rounds
//	go run ./bench/container -runc-static /path/to/static/runc
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/bench/internal/spread"
	"github.com/tangram-dev/tangram/bench/internal/tangrambin"
	"github.com/tangram-dev/tangram/container"
)

// system runs one container to completion: create, start, wait, delete.
type system struct {
	name string
	run  func(ctx context.Context, id, bundle string) error
	// detach starts a container that stays running; stop removes it.
	detach func(ctx context.Context, id, bundle string) error
	stop   func(ctx context.Context, id string) error
	// memory reads the bytes a running container's cgroup holds.
	memory func(id string) (uint64, error)
}

func main() {
	quick := flag.Bool("quick", false, "20 runs per round instead of 50")
	rounds := flag.Int("rounds", 3, "rounds (systems alternate going first)")
	runs := flag.Int("runs", 0, "runs per round (default 50, -quick 20)")
	burst := flag.Int("burst", 20, "containers run at once in the burst case")
	idle := flag.Int("idle", 10, "idle containers in the memory case")
	bin := flag.String("bin", "", "a tangram binary built beforehand (default: build ./cmd/tangram)")
	ociBin := flag.String("oci", "", "a tangram-oci binary built beforehand (default: build ./cmd/tangram-oci without cgo)")
	runcStatic := flag.String("runc-static", "", "a statically linked runc (as runc's `make static` builds it) to measure beside Debian's")
	flag.Parse()
	if *runs == 0 {
		*runs = 50
		if *quick {
			*runs = 20
		}
	}
	if os.Geteuid() != 0 {
		fatal(fmt.Errorf("needs root (namespaces, cgroups, mounts)"))
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		fatal(fmt.Errorf("runc not found: apt-get install runc"))
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		fatal(fmt.Errorf("busybox not found: apt-get install busybox-static"))
	}
	work, err := os.MkdirTemp("", "bench-container-")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(work)
	tangram, err := tangrambin.Build(work, *bin)
	if err != nil {
		fatal(err)
	}
	oci, err := tangrambin.BuildStatic(work, *ociBin, "tangram-oci")
	if err != nil {
		fatal(err)
	}
	trueBundle := makeBundle(filepath.Join(work, "true"), bb, []string{"true"})
	sleepBundle := makeBundle(filepath.Join(work, "sleep"), bb, []string{"sleep", "600"})
	runcVersion, _ := exec.Command(runc, "--version").Output()
	fmt.Printf("runc: %s", firstLine(string(runcVersion)))
	fmt.Printf("bundle: busybox-static rootfs, runc's default spec (5 namespaces, /proc /dev /dev/pts /dev/shm /dev/mqueue /sys, masked paths, 3 capabilities); %d runs per round, %d rounds\n\n", *runs, *rounds)

	runcRoot := filepath.Join(work, "runc-state")
	ourRoot := filepath.Join(work, "tangram-state")
	libRoot := filepath.Join(work, "lib-state")
	lib, err := container.New(container.Config{Root: libRoot, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fatal(err)
	}
	staticRoot := filepath.Join(work, "runc-static-state")
	runcStaticSys := system{
		name: "runc static",
		run: func(ctx context.Context, id, bundle string) error {
			return quiet(exec.CommandContext(ctx, *runcStatic, "--root", staticRoot, "run", "-b", bundle, id))
		},
	}
	runcSys := system{
		name: "runc",
		run: func(ctx context.Context, id, bundle string) error {
			return quiet(exec.CommandContext(ctx, runc, "--root", runcRoot, "run", "-b", bundle, id))
		},
		detach: func(ctx context.Context, id, bundle string) error {
			return detached(exec.CommandContext(ctx, runc, "--root", runcRoot, "run", "-d", "-b", bundle, id))
		},
		stop: func(ctx context.Context, id string) error {
			return quiet(exec.CommandContext(ctx, runc, "--root", runcRoot, "delete", "-f", id))
		},
		memory: func(id string) (uint64, error) {
			out, err := exec.Command(runc, "--root", runcRoot, "events", "--stats", id).Output()
			if err != nil {
				return 0, err
			}
			var ev struct {
				Data struct {
					Memory struct {
						Usage struct {
							Usage uint64 `json:"usage"`
						} `json:"usage"`
					} `json:"memory"`
				} `json:"data"`
			}
			if err := json.Unmarshal(out, &ev); err != nil {
				return 0, fmt.Errorf("runc events: %w", err)
			}
			return ev.Data.Memory.Usage.Usage, nil
		},
	}
	// cli runs our runtime as a command per operation: argv0 and the
	// arguments before the verb.
	cli := func(name string, argv ...string) system {
		cmd := func(ctx context.Context, args ...string) *exec.Cmd {
			return exec.CommandContext(ctx, argv[0], append(slices.Clone(argv[1:]), args...)...)
		}
		return system{
			name: name,
			run: func(ctx context.Context, id, bundle string) error {
				return quiet(cmd(ctx, "run", "-b", bundle, id))
			},
			detach: func(ctx context.Context, id, bundle string) error {
				return detached(cmd(ctx, "run", "-d", "-b", bundle, id))
			},
			stop: func(ctx context.Context, id string) error {
				return quiet(cmd(ctx, "delete", "-f", id))
			},
			memory: func(id string) (uint64, error) {
				r, err := container.New(container.Config{Root: ourRoot})
				if err != nil {
					return 0, err
				}
				st, err := r.Stats(id)
				return st.MemoryBytes, err
			},
		}
	}
	ociSys := cli("tangram-oci", oci, "--root", ourRoot)
	cliSys := cli("tangram container", tangram, "container", "--root", ourRoot)
	libSys := system{
		name: "tangram library",
		run: func(ctx context.Context, id, bundle string) error {
			code, err := lib.Run(ctx, id, bundle, container.CreateOptions{})
			if err == nil && code != 0 {
				err = fmt.Errorf("exit code %d", code)
			}
			return err
		},
	}
	systems := []system{runcSys, ociSys, cliSys, libSys}
	if *runcStatic != "" {
		v, err := exec.Command(*runcStatic, "--version").Output()
		if err != nil {
			fatal(fmt.Errorf("-runc-static: %w", err))
		}
		fmt.Printf("runc static: %s (%s)\n\n", strings.TrimSpace(firstLine(string(v))), *runcStatic)
		systems = append(systems, runcStaticSys)
	}

	// run: one at a time.
	perRun := map[string][]float64{} // ms per run, median of each round
	p99 := map[string][]float64{}
	errs := map[string]int{}
	seq := 0
	for r := range *rounds {
		for _, s := range spread.Order(systems, r) {
			var times []float64
			for range *runs {
				seq++
				id := fmt.Sprintf("b%d", seq)
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := s.run(ctx, id, trueBundle)
				cancel()
				if err != nil {
					errs[s.name]++
					fmt.Fprintf(os.Stderr, "%s run %s: %v\n", s.name, id, err)
					continue
				}
				times = append(times, float64(time.Since(t0).Microseconds())/1000)
			}
			perRun[s.name] = append(perRun[s.name], median(times))
			p99[s.name] = append(p99[s.name], pct(times, 0.99))
			fmt.Fprintf(os.Stderr, "round %d %-16s run: median %.1f ms\n", r+1, s.name, median(times))
		}
	}

	// burst: n at once.
	burstMs := map[string][]float64{}
	for r := range *rounds {
		for _, s := range spread.Order(systems, r) {
			var wg sync.WaitGroup
			var mu sync.Mutex
			t0 := time.Now()
			for i := range *burst {
				seq++
				id := fmt.Sprintf("b%d-%d", seq, i)
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					defer cancel()
					if err := s.run(ctx, id, trueBundle); err != nil {
						mu.Lock()
						errs[s.name]++
						mu.Unlock()
						fmt.Fprintf(os.Stderr, "%s burst %s: %v\n", s.name, id, err)
					}
				}()
			}
			wg.Wait()
			burstMs[s.name] = append(burstMs[s.name], float64(time.Since(t0).Microseconds())/1000)
		}
	}

	// idle: memory held per detached container (CLI systems only).
	idleKiB := map[string][]float64{}
	resident := map[string]int{} // runtime processes left running beside the idle containers
	for r := range *rounds {
		for _, s := range spread.Order([]system{runcSys, ociSys}, r) {
			var ids []string
			var total uint64
			for i := range *idle {
				seq++
				id := fmt.Sprintf("idle%d-%d", seq, i)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := s.detach(ctx, id, sleepBundle)
				cancel()
				if err != nil {
					errs[s.name]++
					fmt.Fprintf(os.Stderr, "%s detach %s: %v\n", s.name, id, err)
					continue
				}
				ids = append(ids, id)
			}
			resident[s.name] = max(resident[s.name], residentRuntimes(s.name))
			for _, id := range ids {
				m, err := s.memory(id)
				if err != nil {
					errs[s.name]++
					fmt.Fprintf(os.Stderr, "%s memory %s: %v\n", s.name, id, err)
				}
				total += m
			}
			for _, id := range ids {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				if err := s.stop(ctx, id); err != nil {
					errs[s.name]++
					fmt.Fprintf(os.Stderr, "%s delete %s: %v\n", s.name, id, err)
				}
				cancel()
			}
			if len(ids) > 0 {
				idleKiB[s.name] = append(idleKiB[s.name], float64(total)/float64(len(ids))/1024)
			}
		}
	}

	ours := []string{"tangram-oci", "tangram container", "tangram library"}
	fmt.Println("| case | runc | tangram-oci | tangram container | tangram library | runc ÷ tangram-oci | runc ÷ tangram container | runc ÷ library |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- |")
	var rows []spread.Row
	line := func(name, unit string, m map[string][]float64) {
		peer := spread.Summarise(m["runc"])
		cells := []string{name, peer.Format("%.1f") + " " + unit}
		var ratios []string
		for _, o := range ours {
			if len(m[o]) == 0 {
				cells = append(cells, "–")
				ratios = append(ratios, "–")
				continue
			}
			cells = append(cells, spread.Summarise(m[o]).Format("%.1f")+" "+unit)
			r := spread.Ratios(m["runc"], m[o])
			ratios = append(ratios, spread.Summarise(r).Format("%.2f×"))
			rows = append(rows, spread.NewRow(name+" ("+o+")", map[string]any{unit: spread.Summarise(m[o]).Median}, map[string]any{unit: peer.Median}, r, errs[o]+errs["runc"]))
		}
		fmt.Println("| " + strings.Join(append(cells, ratios...), " | ") + " |")
	}
	line("run /bin/true, median", "ms", perRun)
	line("run /bin/true, p99", "ms", p99)
	line(fmt.Sprintf("burst of %d, wall", *burst), "ms", burstMs)
	line("idle container, cgroup memory", "KiB", idleKiB)
	if *runcStatic != "" {
		fmt.Println("\n| case | runc static | tangram-oci | runc static ÷ tangram-oci |")
		fmt.Println("| --- | --- | --- | --- |")
		for _, c := range []struct {
			name string
			m    map[string][]float64
		}{{"run /bin/true, median", perRun}, {"run /bin/true, p99", p99}, {fmt.Sprintf("burst of %d, wall", *burst), burstMs}} {
			peer, ours := c.m["runc static"], c.m["tangram-oci"]
			r := spread.Ratios(peer, ours)
			fmt.Printf("| %s | %s ms | %s ms | %s |\n", c.name, spread.Summarise(peer).Format("%.1f"), spread.Summarise(ours).Format("%.1f"), spread.Summarise(r).Format("%.2f×"))
			rows = append(rows, spread.NewRow(c.name+" (tangram-oci vs runc static)", map[string]any{"ms": spread.Summarise(ours).Median}, map[string]any{"ms": spread.Summarise(peer).Median}, r, errs["tangram-oci"]+errs["runc static"]))
		}
	}
	fmt.Printf("\nruntime processes left running beside %d idle containers: runc %d, tangram-oci %d\n", *idle, resident["runc"], resident["tangram-oci"])
	fmt.Printf("errors: runc %d, runc static %d, tangram-oci %d, tangram container %d, tangram library %d\n\n", errs["runc"], errs["runc static"], errs["tangram-oci"], errs["tangram container"], errs["tangram library"])
	spread.Print("container", "runc "+strings.TrimSpace(strings.TrimPrefix(firstLine(string(runcVersion)), "runc version ")), rows,
		map[string]any{"runs_per_round": *runs, "burst": *burst, "note": "ratio = runc's time / ours (above 1: faster than runc)"})
}

// residentRuntimes counts processes of the runtime named system (runc, or
// tangram-oci and tangram) running while its containers idle — a shim or
// monitor per container would show here.
func residentRuntimes(system string) int {
	names := map[string]bool{"runc": true}
	if system != "runc" {
		names = map[string]bool{"tangram-oci": true, "tangram": true}
	}
	n := 0
	ents, _ := os.ReadDir("/proc")
	self := strconv.Itoa(os.Getpid())
	for _, e := range ents {
		if e.Name() == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue
		}
		if names[strings.TrimSpace(string(b))] {
			n++
		}
	}
	return n
}

func makeBundle(dir, busybox string, args []string) string {
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			fatal(err)
		}
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), data, 0o755); err != nil {
		fatal(err)
	}
	for _, a := range []string{"sh", "true", "sleep"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil {
			fatal(err)
		}
	}
	if err := container.WriteSpec(dir, container.DefaultSpec("rootfs", args)); err != nil {
		fatal(err)
	}
	return dir
}

func quiet(cmd *exec.Cmd) error {
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// detached runs a command that leaves a container behind holding its
// standard streams: they go to /dev/null, or waiting for them would wait
// for the container.
func detached(cmd *exec.Cmd) error {
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", cmd.Args[0], err)
	}
	return nil
}

func median(xs []float64) float64 { return pct(xs, 0.5) }

func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(i, 0)]
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l + "\n"
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench/container:", err)
	os.Exit(1)
}
