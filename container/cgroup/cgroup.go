// Package cgroup places a container's processes in a control group and
// limits them: memory and swap, CPU shares or weight and quota, cpuset,
// pids, and freeze/thaw. cgroup v1 (one hierarchy per controller) and v2
// (one unified hierarchy) sit behind the one Group type; which the host
// has is detected when a group is opened. A hybrid host — v1 controllers
// with an empty v2 mount beside them — is run as v1, the way its
// controllers are.
//
// The interface is the kernel's: directories under /sys/fs/cgroup, a
// process joined by writing its PID to cgroup.procs, limits written to
// the controllers' files.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Mode is the cgroup layout a host runs.
type Mode int

const (
	// V1 has one hierarchy per controller (memory, cpu, pids…).
	V1 Mode = 1
	// V2 has one unified hierarchy.
	V2 Mode = 2
)

func (m Mode) String() string {
	if m == V2 {
		return "v2"
	}
	return "v1"
}

// v1Controllers are the v1 hierarchies a group is made in. A missing one
// is skipped, and a limit that needs it fails with a clear error.
var v1Controllers = []string{"memory", "cpu", "cpuacct", "cpuset", "pids", "freezer", "devices", "blkio"}

// ErrNotFound is returned by Open for a group that does not exist.
var ErrNotFound = errors.New("cgroup: group not found")

// Group is one control group — in v1, the directory of that name in every
// controller's hierarchy.
type Group struct {
	mode Mode
	path string // as given, e.g. "/tangram/abc" or "tangram/abc"
	// dirs maps a v1 controller (or "" for v2) to its directory.
	dirs map[string]string
}

// v2Root is where the unified hierarchy is mounted; forceV2 makes every
// group a v2 group there. Tests set both to exercise v2 on a hybrid host
// (its v2 mount at /sys/fs/cgroup/unified has no controllers, but groups,
// cgroup.procs, cgroup.freeze and clone3 into a group work).
var (
	v2Root  = "/sys/fs/cgroup"
	forceV2 = false
)

// Detect reports the host's cgroup mode from its mounts: V2 when
// /sys/fs/cgroup is cgroup2 itself, V1 otherwise.
func Detect() (Mode, error) {
	if forceV2 {
		return V2, nil
	}
	var st fsStat
	if err := statfs("/sys/fs/cgroup", &st); err != nil {
		return 0, fmt.Errorf("cgroup: stat /sys/fs/cgroup: %w", err)
	}
	if st.isCgroup2 {
		return V2, nil
	}
	return V1, nil
}

// resolve turns a group path into a directory under a hierarchy mounted at
// mount. An absolute path is from the hierarchy's root; a relative one is
// below the cgroup this process runs in (so a runtime confined to a cgroup
// keeps its containers inside it).
func resolve(mount, own, path string) string {
	if filepath.IsAbs(path) {
		return filepath.Join(mount, path)
	}
	return filepath.Join(mount, own, path)
}

// ownCgroups reads /proc/self/cgroup: controller → path ("" for v2).
func ownCgroups() (map[string]string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			out[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	return out, sc.Err()
}

// v1Mounts finds each v1 controller's mount point from /proc/self/mountinfo.
func v1Mounts() (map[string]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// … mountpoint(4) … "-" fstype source superopts
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 >= len(fields) || fields[sep+1] != "cgroup" {
			continue
		}
		for _, opt := range strings.Split(fields[sep+3], ",") {
			for _, c := range v1Controllers {
				if opt == c {
					if _, ok := out[c]; !ok {
						out[c] = fields[4]
					}
				}
			}
		}
	}
	return out, sc.Err()
}

// New makes the group at path (creating its directories) without limits.
// In v1 it is made in every controller's hierarchy, or in only those
// named in controllers when any are given (a process left out of a
// hierarchy stays in its parent's group there); v2 has one directory.
func New(path string, controllers ...string) (*Group, error) {
	g, err := locate(path)
	if err != nil {
		return nil, err
	}
	if g.mode == V1 && len(controllers) > 0 {
		for c := range g.dirs {
			if !slices.Contains(controllers, c) {
				delete(g.dirs, c)
			}
		}
	}
	if g.mode == V2 {
		// Controllers must be enabled in every ancestor's subtree_control.
		if err := enableV2Controllers(g.dirs[""]); err != nil {
			return nil, err
		}
	}
	for c, d := range g.dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup: make %s group %s: %w", c, path, err)
		}
		if c == "cpuset" {
			// A v1 cpuset group takes no task until cpus and mems are set:
			// inherit the parent's.
			if err := inheritCpuset(d); err != nil {
				return nil, err
			}
		}
	}
	return g, nil
}

// Open finds an existing group: the hierarchies it was made in.
func Open(path string) (*Group, error) {
	if path == "" {
		// Not the caller's own group, which "" would resolve to.
		return nil, fmt.Errorf("%w: no group path (a container made without a cgroup)", ErrNotFound)
	}
	g, err := locate(path)
	if err != nil {
		return nil, err
	}
	for c, d := range g.dirs {
		if _, err := os.Stat(d); err != nil {
			delete(g.dirs, c)
		}
	}
	if len(g.dirs) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, path)
	}
	return g, nil
}

// Controllers lists the v1 controllers r needs a group in: always memory,
// cpuacct, pids, freezer and devices (for stats, pause and the device
// allow-list); cpu, cpuset and blkio only when r limits them. Nil in v2.
func Controllers(r *specs.LinuxResources) []string {
	out := []string{"memory", "cpuacct", "pids", "freezer", "devices"}
	if r == nil {
		return out
	}
	if c := r.CPU; c != nil {
		if c.Shares != nil || c.Quota != nil || c.Period != nil || c.RealtimePeriod != nil || c.RealtimeRuntime != nil {
			out = append(out, "cpu")
		}
		if c.Cpus != "" || c.Mems != "" {
			out = append(out, "cpuset")
		}
	}
	if r.BlockIO != nil {
		out = append(out, "blkio")
	}
	return out
}

func locate(path string) (*Group, error) {
	if path == "" {
		return nil, errors.New("cgroup: empty group path")
	}
	if strings.Contains(path, "..") {
		return nil, fmt.Errorf("cgroup: group path %q must not contain ..", path)
	}
	mode, err := Detect()
	if err != nil {
		return nil, err
	}
	own, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	g := &Group{mode: mode, path: path, dirs: map[string]string{}}
	if mode == V2 {
		g.dirs[""] = resolve(v2Root, own[""], path)
		return g, nil
	}
	mounts, err := v1Mounts()
	if err != nil {
		return nil, err
	}
	for _, c := range v1Controllers {
		if m, ok := mounts[c]; ok {
			g.dirs[c] = resolve(m, own[c], path)
		}
	}
	if len(g.dirs) == 0 {
		return nil, errors.New("cgroup: no v1 controller is mounted under /sys/fs/cgroup")
	}
	return g, nil
}

func enableV2Controllers(dir string) error {
	// Walk from the root down to dir's parent enabling what the parent has.
	rel, err := filepath.Rel(v2Root, filepath.Dir(dir))
	if err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	cur := v2Root
	steps := []string{cur}
	if rel != "." {
		for _, p := range strings.Split(rel, "/") {
			cur = filepath.Join(cur, p)
			steps = append(steps, cur)
		}
	}
	for _, d := range steps {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		avail, err := os.ReadFile(filepath.Join(d, "cgroup.controllers"))
		if err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		var want []string
		for _, c := range strings.Fields(string(avail)) {
			switch c {
			case "memory", "cpu", "cpuset", "pids", "io":
				want = append(want, "+"+c)
			}
		}
		if len(want) == 0 {
			continue
		}
		// Best effort: a parent with processes of its own cannot enable
		// controllers (the "no internal processes" rule); limits then
		// fail later with the file's own error.
		_ = os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte(strings.Join(want, " ")), 0)
	}
	return nil
}

func inheritCpuset(dir string) error {
	// Every level made on the way down starts empty too: fill the
	// ancestors first.
	parent := filepath.Dir(dir)
	if _, err := os.Stat(filepath.Join(filepath.Dir(parent), "cpuset.cpus")); err == nil {
		if err := inheritCpuset(parent); err != nil {
			return err
		}
	}
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		cur, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		if strings.TrimSpace(string(cur)) != "" {
			continue
		}
		parent, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
		if err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), parent, 0); err != nil {
			return fmt.Errorf("cgroup: set %s: %w", f, err)
		}
	}
	return nil
}

// Mode reports the group's cgroup layout.
func (g *Group) Mode() Mode { return g.mode }

// Path is the group's path as given to New or Open.
func (g *Group) Path() string { return g.path }

// Dir is the group's directory in v2, or in v1 the given controller's.
func (g *Group) Dir(controller string) string {
	if g.mode == V2 {
		return g.dirs[""]
	}
	return g.dirs[controller]
}

// FD opens the group's v2 directory for clone3's CLONE_INTO_CGROUP. In v1
// it returns -1: the caller adds the process with Add instead. A nil
// group (a container without one) returns -1 too.
func (g *Group) FD() (int, func(), error) {
	if g == nil || g.mode != V2 {
		return -1, func() {}, nil
	}
	f, err := os.Open(g.dirs[""])
	if err != nil {
		return -1, func() {}, fmt.Errorf("cgroup: %w", err)
	}
	return int(f.Fd()), func() { f.Close() }, nil
}

// Add moves a process into the group (every v1 hierarchy); into a nil
// group, nowhere.
func (g *Group) Add(pid int) error {
	if g == nil {
		return nil
	}
	p := []byte(strconv.Itoa(pid))
	for c, d := range g.dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), p, 0); err != nil {
			return fmt.Errorf("cgroup: add %d to %s %s: %w", pid, c, g.path, err)
		}
	}
	return nil
}

func (g *Group) write(controller, file, value string) error {
	d := g.Dir(controller)
	if d == "" {
		return fmt.Errorf("cgroup: controller %s is not mounted on this host (needed for %s)", controller, file)
	}
	if err := os.WriteFile(filepath.Join(d, file), []byte(value), 0); err != nil {
		return fmt.Errorf("cgroup: write %s=%q in %s: %w", file, value, g.path, err)
	}
	return nil
}

func (g *Group) read(controller, file string) (string, error) {
	d := g.Dir(controller)
	if d == "" {
		return "", fmt.Errorf("cgroup: controller %s is not mounted on this host", controller)
	}
	b, err := os.ReadFile(filepath.Join(d, file))
	if err != nil {
		return "", fmt.Errorf("cgroup: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// AddSelf moves the calling OS thread into the group (v1 only: each
// hierarchy's tasks file), so that a process it forks is born in the
// group. The caller must hold its goroutine on the thread
// (runtime.LockOSThread) and call the returned function on the same
// thread: it moves the thread back where it was. A thread left in the
// group would make this whole process one of the group's (cgroup.procs
// lists it, and a kill of the group would reach it); a thread whose
// restore failed must end with its goroutine, never be unlocked.
//
// The thread names itself as "0", never by its ID: the kernel moves the
// writing thread alone without the global lock that guards the
// migration of other tasks, whose write side waits for an RCU grace
// period — 10–20 ms per container on a small virtual machine, more than
// the whole rest of a container's start.
func (g *Group) AddSelf() (restore func() error, err error) {
	if g.mode == V2 {
		return nil, errors.New("cgroup: threads join v2 groups only with their process")
	}
	mounts, err := v1Mounts()
	if err != nil {
		return nil, err
	}
	tid := unix.Gettid()
	was, err := threadCgroups(tid)
	if err != nil {
		return nil, err
	}
	self := []byte("0")
	// The way back is opened now: the caller may change the thread's
	// mount namespace or drop its privileges, after which these paths
	// would not resolve or open.
	var back []*os.File
	restore = func() error {
		var first error
		for _, f := range back {
			if _, err := f.Write(self); err != nil && first == nil {
				first = fmt.Errorf("cgroup: move thread %d back to %s: %w", tid, f.Name(), err)
			}
			f.Close()
		}
		back = nil
		return first
	}
	for c := range g.dirs {
		f, err := os.OpenFile(filepath.Join(mounts[c], was[c], "tasks"), os.O_WRONLY, 0)
		if err != nil {
			restore()
			return nil, fmt.Errorf("cgroup: thread %d's %s group: %w", tid, c, err)
		}
		back = append(back, f)
	}
	for c, d := range g.dirs {
		if err := os.WriteFile(filepath.Join(d, "tasks"), self, 0); err != nil {
			restore()
			return nil, fmt.Errorf("cgroup: add thread %d to %s %s: %w", tid, c, g.path, err)
		}
	}
	return restore, nil
}

// threadCgroups reads a thread's v1 groups: controller → path.
func threadCgroups(tid int) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/cgroup", tid))
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	out := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 || parts[1] == "" {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	return out, nil
}

// Set writes the limits r asks for. Unset fields are left alone.
func (g *Group) Set(r *specs.LinuxResources) error {
	if r == nil {
		return nil
	}
	if g.mode == V2 {
		return g.setV2(r)
	}
	return g.setV1(r)
}

func (g *Group) setV1(r *specs.LinuxResources) error {
	if m := r.Memory; m != nil {
		if m.Limit != nil {
			if err := g.write("memory", "memory.limit_in_bytes", strconv.FormatInt(*m.Limit, 10)); err != nil {
				return err
			}
		}
		if m.Swap != nil {
			// v1 memsw is memory+swap, as the runtime spec's swap is.
			if err := g.write("memory", "memory.memsw.limit_in_bytes", strconv.FormatInt(*m.Swap, 10)); err != nil {
				return err
			}
		}
		if m.Reservation != nil {
			if err := g.write("memory", "memory.soft_limit_in_bytes", strconv.FormatInt(*m.Reservation, 10)); err != nil {
				return err
			}
		}
		if m.Swappiness != nil {
			if err := g.write("memory", "memory.swappiness", strconv.FormatUint(*m.Swappiness, 10)); err != nil {
				return err
			}
		}
		if m.DisableOOMKiller != nil && *m.DisableOOMKiller {
			if err := g.write("memory", "memory.oom_control", "1"); err != nil {
				return err
			}
		}
	}
	if c := r.CPU; c != nil {
		if c.Shares != nil {
			if err := g.write("cpu", "cpu.shares", strconv.FormatUint(*c.Shares, 10)); err != nil {
				return err
			}
		}
		if c.Period != nil {
			if err := g.write("cpu", "cpu.cfs_period_us", strconv.FormatUint(*c.Period, 10)); err != nil {
				return err
			}
		}
		if c.Quota != nil {
			if err := g.write("cpu", "cpu.cfs_quota_us", strconv.FormatInt(*c.Quota, 10)); err != nil {
				return err
			}
		}
		if err := g.setCpuset("cpuset", c); err != nil {
			return err
		}
	}
	if p := r.Pids; p != nil {
		if err := g.write("pids", "pids.max", pidsMax(p)); err != nil {
			return err
		}
	}
	if len(r.Devices) > 0 && g.dirs["devices"] != "" {
		if err := g.setDevicesV1(r.Devices); err != nil {
			return err
		}
	}
	return nil
}

// setCpuset writes the CPUs and memory nodes c names (the files have the
// same names in v1's cpuset hierarchy and in v2).
func (g *Group) setCpuset(controller string, c *specs.LinuxCPU) error {
	if c.Cpus != "" {
		if err := g.write(controller, "cpuset.cpus", c.Cpus); err != nil {
			return err
		}
	}
	if c.Mems != "" {
		if err := g.write(controller, "cpuset.mems", c.Mems); err != nil {
			return err
		}
	}
	return nil
}

// pidsMax is pids.max's value for p: a positive limit, else "max".
func pidsMax(p *specs.LinuxPids) string {
	if p.Limit != nil && *p.Limit > 0 {
		return strconv.FormatInt(*p.Limit, 10)
	}
	return "max"
}

// setDevicesV1 applies the device allow-list rules in order, as runc does.
func (g *Group) setDevicesV1(rules []specs.LinuxDeviceCgroup) error {
	if len(rules) == 0 {
		return nil
	}
	dir := g.Dir("devices")
	if dir == "" {
		return errors.New("cgroup: controller devices is not mounted on this host (needed for the device rules)")
	}
	// Each write is one rule; the two files stay open across the rules.
	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, d := range rules {
		file := "devices.deny"
		if d.Allow {
			file = "devices.allow"
		}
		typ := d.Type
		if typ == "" {
			typ = "a"
		}
		major, minor := "*", "*"
		if d.Major != nil && *d.Major >= 0 {
			major = strconv.FormatInt(*d.Major, 10)
		}
		if d.Minor != nil && *d.Minor >= 0 {
			minor = strconv.FormatInt(*d.Minor, 10)
		}
		access := d.Access
		if access == "" {
			access = "rwm"
		}
		rule := typ + " " + major + ":" + minor + " " + access
		if typ == "a" {
			rule = "a"
		}
		f := files[file]
		if f == nil {
			var err error
			if f, err = os.OpenFile(filepath.Join(dir, file), os.O_WRONLY, 0); err != nil {
				return fmt.Errorf("cgroup: %w", err)
			}
			files[file] = f
		}
		if _, err := f.Write([]byte(rule)); err != nil {
			return fmt.Errorf("cgroup: write %s=%q in %s: %w", file, rule, g.path, err)
		}
	}
	return nil
}

func (g *Group) setV2(r *specs.LinuxResources) error {
	if m := r.Memory; m != nil {
		if m.Limit != nil {
			v := "max"
			if *m.Limit > 0 {
				v = strconv.FormatInt(*m.Limit, 10)
			}
			if err := g.write("", "memory.max", v); err != nil {
				return err
			}
			if m.Swap != nil {
				// The spec's swap is memory+swap; v2's swap.max is swap alone.
				sw := "max"
				if *m.Swap > 0 && *m.Limit > 0 {
					sw = strconv.FormatInt(max(*m.Swap-*m.Limit, 0), 10)
				}
				if err := g.write("", "memory.swap.max", sw); err != nil {
					return err
				}
			}
		}
		if m.Reservation != nil {
			if err := g.write("", "memory.low", strconv.FormatInt(*m.Reservation, 10)); err != nil {
				return err
			}
		}
	}
	if c := r.CPU; c != nil {
		if c.Shares != nil && *c.Shares > 0 {
			// The conversion runc and the kernel docs use: shares 2…262144
			// onto weight 1…10000.
			w := 1 + ((*c.Shares-2)*9999)/262142
			if err := g.write("", "cpu.weight", strconv.FormatUint(w, 10)); err != nil {
				return err
			}
		}
		if c.Quota != nil || c.Period != nil {
			period := uint64(100000)
			if c.Period != nil && *c.Period > 0 {
				period = *c.Period
			}
			quota := "max"
			if c.Quota != nil && *c.Quota > 0 {
				quota = strconv.FormatInt(*c.Quota, 10)
			}
			if err := g.write("", "cpu.max", quota+" "+strconv.FormatUint(period, 10)); err != nil {
				return err
			}
		}
		if err := g.setCpuset("", c); err != nil {
			return err
		}
	}
	if p := r.Pids; p != nil {
		if err := g.write("", "pids.max", pidsMax(p)); err != nil {
			return err
		}
	}
	for k, v := range r.Unified {
		if strings.ContainsAny(k, "/\x00") || strings.HasPrefix(k, ".") {
			return fmt.Errorf("cgroup: unified key %q is not a file name", k)
		}
		if err := g.write("", k, v); err != nil {
			return err
		}
	}
	return nil
}

// Freeze stops every process of the group and waits until the kernel says
// they are frozen.
func (g *Group) Freeze() error { return g.freeze(true) }

// Thaw resumes a frozen group.
func (g *Group) Thaw() error { return g.freeze(false) }

func (g *Group) freeze(on bool) error {
	ctl, file, want := "freezer", "freezer.state", "THAWED"
	val := "THAWED"
	if g.mode == V2 {
		ctl, file = "", "cgroup.freeze"
		val, want = "0", "0"
		if on {
			val, want = "1", "1"
		}
	} else if on {
		val, want = "FROZEN", "FROZEN"
	}
	if err := g.write(ctl, file, val); err != nil {
		return err
	}
	// v1's state passes through FREEZING; v2 reports in cgroup.events.
	for i := 0; i < 1000; i++ {
		var got string
		var err error
		if g.mode == V2 {
			ev, e := g.read("", "cgroup.events")
			err = e
			for _, l := range strings.Split(ev, "\n") {
				if v, ok := strings.CutPrefix(l, "frozen "); ok {
					got = v
				}
			}
		} else {
			got, err = g.read(ctl, file)
		}
		if err != nil {
			return err
		}
		if got == want {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("cgroup: %s did not reach %s within 1 s", g.path, want)
}

// Frozen reports whether the group is frozen.
func (g *Group) Frozen() (bool, error) {
	if g.mode == V2 {
		v, err := g.read("", "cgroup.freeze")
		return v == "1", err
	}
	v, err := g.read("freezer", "freezer.state")
	return v == "FROZEN", err
}

// Procs lists the PIDs in the group.
func (g *Group) Procs() ([]int, error) {
	ctl := ""
	if g.mode == V1 {
		ctl = "pids"
		if g.dirs["pids"] == "" {
			for c := range g.dirs {
				ctl = c
				break
			}
		}
	}
	s, err := g.read(ctl, "cgroup.procs")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range strings.Fields(s) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out, nil
}

// Stats are a group's resource use.
type Stats struct {
	MemoryBytes      uint64 `json:"memory_bytes"`
	MemoryLimitBytes uint64 `json:"memory_limit_bytes,omitempty"`
	MemoryMaxBytes   uint64 `json:"memory_max_bytes,omitempty"`
	OOMKills         uint64 `json:"oom_kills"`
	CPUNanos         uint64 `json:"cpu_nanos"`
	Pids             uint64 `json:"pids"`
	PidsLimit        uint64 `json:"pids_limit,omitempty"`
}

func readUint(s string) uint64 {
	n, _ := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	return n
}

func keyed(s, key string) uint64 {
	for _, l := range strings.Split(s, "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && f[0] == key {
			return readUint(f[1])
		}
	}
	return 0
}

// Stats reads the group's counters. A controller the host lacks leaves
// its fields zero.
func (g *Group) Stats() (Stats, error) {
	var st Stats
	if g.mode == V2 {
		if s, err := g.read("", "memory.current"); err == nil {
			st.MemoryBytes = readUint(s)
		}
		if s, err := g.read("", "memory.max"); err == nil && s != "max" {
			st.MemoryLimitBytes = readUint(s)
		}
		if s, err := g.read("", "memory.peak"); err == nil {
			st.MemoryMaxBytes = readUint(s)
		}
		if s, err := g.read("", "memory.events"); err == nil {
			st.OOMKills = keyed(s, "oom_kill")
		}
		if s, err := g.read("", "cpu.stat"); err == nil {
			st.CPUNanos = keyed(s, "usage_usec") * 1000
		}
		if s, err := g.read("", "pids.current"); err == nil {
			st.Pids = readUint(s)
		}
		if s, err := g.read("", "pids.max"); err == nil && s != "max" {
			st.PidsLimit = readUint(s)
		}
		return st, nil
	}
	if s, err := g.read("memory", "memory.usage_in_bytes"); err == nil {
		st.MemoryBytes = readUint(s)
	}
	if s, err := g.read("memory", "memory.limit_in_bytes"); err == nil {
		if v := readUint(s); v < 1<<62 {
			st.MemoryLimitBytes = v
		}
	}
	if s, err := g.read("memory", "memory.max_usage_in_bytes"); err == nil {
		st.MemoryMaxBytes = readUint(s)
	}
	if s, err := g.read("memory", "memory.oom_control"); err == nil {
		st.OOMKills = keyed(s, "oom_kill")
	}
	if s, err := g.read("cpuacct", "cpuacct.usage"); err == nil {
		st.CPUNanos = readUint(s)
	}
	if s, err := g.read("pids", "pids.current"); err == nil {
		st.Pids = readUint(s)
	}
	if s, err := g.read("pids", "pids.max"); err == nil && s != "max" {
		st.PidsLimit = readUint(s)
	}
	return st, nil
}

func emptyGroup(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	return err == nil && len(strings.TrimSpace(string(b))) == 0
}

// Kill sends sig to every process in the group.
func (g *Group) Kill(sig os.Signal) error {
	pids, err := g.Procs()
	if err != nil {
		return err
	}
	var first error
	for _, pid := range pids {
		if pid == os.Getpid() {
			// A thread of this process visiting the group (AddSelf)
			// makes the process one of its members for a moment: never
			// signal ourselves.
			continue
		}
		p, err := os.FindProcess(pid)
		if err == nil {
			err = p.Signal(sig)
		}
		if err != nil && !errors.Is(err, os.ErrProcessDone) && first == nil {
			first = fmt.Errorf("cgroup: signal %d: %w", pid, err)
		}
	}
	return first
}

// Destroy removes the group's directories. It fails while processes are
// still in it; a group already gone is not an error. A frozen group is
// thawed first so that killed processes can exit.
func (g *Group) Destroy() error {
	var first error
	for c, d := range g.dirs {
		// rmdir, not os.Remove, which tries unlink first: a failing
		// system call per hierarchy.
		err := unix.Rmdir(d)
		// The kernel may report EBUSY for a moment after the last process
		// exits, until it is reaped; with processes still listed, it is
		// busy for good.
		for i := 0; err != nil && isBusy(err) && i < 200 && emptyGroup(d); i++ {
			time.Sleep(5 * time.Millisecond)
			err = unix.Rmdir(d)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) && first == nil {
			first = fmt.Errorf("cgroup: remove %s group %s: %w", c, g.path, err)
		}
	}
	return first
}
