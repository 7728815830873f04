// Package cpubudget gives a process a fixed CPU budget with a cgroup, the
// way capacity is measured on shared hardware: a group with a CFS quota
// (0.3 CPU = 30 ms of every 100 ms), the process's PID written into it.
// It works on cgroup v2 (cpu.max) and on v1 hierarchies that mount the cpu
// controller at /sys/fs/cgroup/cpu (cpu.cfs_quota_us, cpu.cfs_period_us),
// needs root, and removes its groups on Close.
package cpubudget

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Group is one cgroup with a CPU quota.
type Group struct {
	dir string
	v2  bool
}

// root finds the cpu controller: the v2 unified hierarchy when it has the
// cpu controller, else the v1 cpu hierarchy.
func root() (dir string, v2 bool, err error) {
	if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil && strings.Contains(" "+string(b)+" ", " cpu ") {
		return "/sys/fs/cgroup", true, nil
	}
	for _, d := range []string{"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"} {
		if _, err := os.Stat(filepath.Join(d, "cpu.cfs_quota_us")); err == nil {
			return d, false, nil
		}
	}
	return "", false, errors.New("cpubudget: no cgroup cpu controller found (cgroup v2 cpu.max or v1 /sys/fs/cgroup/cpu)")
}

// New creates group name with cpus CPUs of quota per period (cpus 0.3,
// period 100 ms: 30 ms of CPU time in every 100 ms).
func New(name string, cpus float64, period time.Duration) (*Group, error) {
	if cpus <= 0 || period < time.Millisecond {
		return nil, fmt.Errorf("cpubudget: %v CPUs per %v: want a positive budget and a period of at least 1 ms", cpus, period)
	}
	r, v2, err := root()
	if err != nil {
		return nil, err
	}
	g := &Group{dir: filepath.Join(r, name), v2: v2}
	if err := os.Mkdir(g.dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("cpubudget: create %s (root needed): %w", g.dir, err)
	}
	per := period.Microseconds()
	quota := int64(cpus * float64(per))
	if v2 {
		err = write(filepath.Join(g.dir, "cpu.max"), fmt.Sprintf("%d %d", quota, per))
	} else {
		// The period first: a quota above the old period's is refused on
		// some kernels only when the period is not yet set.
		if err = write(filepath.Join(g.dir, "cpu.cfs_period_us"), strconv.FormatInt(per, 10)); err == nil {
			err = write(filepath.Join(g.dir, "cpu.cfs_quota_us"), strconv.FormatInt(quota, 10))
		}
	}
	if err != nil {
		_ = os.Remove(g.dir)
		return nil, err
	}
	return g, nil
}

// Add moves process pid (all its threads) into the group.
func (g *Group) Add(pid int) error {
	return write(filepath.Join(g.dir, "cgroup.procs"), strconv.Itoa(pid))
}

// Usage is the CPU time used by the group's processes so far, and the time
// they spent throttled (waiting for the next period's quota).
func (g *Group) Usage() (used, throttled time.Duration, err error) {
	if g.v2 {
		b, err := os.ReadFile(filepath.Join(g.dir, "cpu.stat"))
		if err != nil {
			return 0, 0, err
		}
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) != 2 {
				continue
			}
			v, _ := strconv.ParseInt(f[1], 10, 64)
			switch f[0] {
			case "usage_usec":
				used = time.Duration(v) * time.Microsecond
			case "throttled_usec":
				throttled = time.Duration(v) * time.Microsecond
			}
		}
		return used, throttled, nil
	}
	// v1: cpuacct may share the hierarchy (cpuacct.usage, ns); cpu.stat
	// has throttled_time (ns).
	if b, err := os.ReadFile(filepath.Join(g.dir, "cpuacct.usage")); err == nil {
		v, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		used = time.Duration(v)
	} else if b, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(g.dir)), "cpuacct", filepath.Base(g.dir), "cpuacct.usage")); err == nil {
		v, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		used = time.Duration(v)
	}
	if b, err := os.ReadFile(filepath.Join(g.dir, "cpu.stat")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "throttled_time" {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				throttled = time.Duration(v)
			}
		}
	}
	return used, throttled, nil
}

// Close moves what is left in the group to the root group and removes it.
func (g *Group) Close() error {
	if b, err := os.ReadFile(filepath.Join(g.dir, "cgroup.procs")); err == nil {
		for _, p := range strings.Fields(string(b)) {
			_ = write(filepath.Join(filepath.Dir(g.dir), "cgroup.procs"), p)
		}
	}
	if err := os.Remove(g.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cpubudget: remove %s: %w", g.dir, err)
	}
	return nil
}

func write(path, v string) error {
	if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
		return fmt.Errorf("cpubudget: write %q to %s: %w", v, path, err)
	}
	return nil
}
