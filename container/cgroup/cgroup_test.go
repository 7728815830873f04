package cgroup

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tangram-dev/tangram/internal/wait"
)

func TestControllers(t *testing.T) {
	base := Controllers(nil)
	if slices.Contains(base, "cpu") || slices.Contains(base, "cpuset") || !slices.Contains(base, "freezer") {
		t.Fatalf("no limits: %v", base)
	}
	q := int64(1000)
	got := Controllers(&specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: &q, Cpus: "0"}, BlockIO: &specs.LinuxBlockIO{}})
	for _, c := range []string{"cpu", "cpuset", "blkio"} {
		if !slices.Contains(got, c) {
			t.Errorf("limits need %s: %v", c, got)
		}
	}
	if v := pidsMax(&specs.LinuxPids{}); v != "max" {
		t.Errorf("no limit: %q", v)
	}
	if _, err := New("../escape"); err == nil {
		t.Error("a path with .. accepted")
	}
}

// TestGroup makes a real group, puts a process in it, freezes and thaws
// it, reads its counters and removes it.
func TestGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CI runs as root)")
	}
	g, err := New("tangram-test/group")
	if err != nil {
		t.Fatal(err)
	}
	limit := int64(5)
	if err := g.Set(&specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &limit}}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait(); g.Destroy() }()
	if err := g.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	procs, err := g.Procs()
	if err != nil || !slices.Contains(procs, cmd.Process.Pid) {
		t.Fatalf("procs %v %v", procs, err)
	}
	if err := g.Freeze(); err != nil {
		t.Fatal(err)
	}
	if f, _ := g.Frozen(); !f {
		t.Fatal("not frozen")
	}
	if err := g.Thaw(); err != nil {
		t.Fatal(err)
	}
	st, err := g.Stats()
	if err != nil || st.Pids != 1 || st.PidsLimit != 5 {
		t.Fatalf("stats %+v %v", st, err)
	}
	if err := g.Destroy(); err == nil {
		t.Fatal("a group with a process in it was removed")
	}
	cmd.Process.Kill()
	cmd.Wait()
	wait.For(t, 5*time.Second, "the empty group to be removed", func() bool { return g.Destroy() == nil })
	if _, err := Open("tangram-test/group"); err == nil {
		t.Fatal("group still there")
	}
}

// TestGroupV2 runs the v2 code on this host's unified mount (hybrid hosts
// have one without controllers): a process cloned straight into the group
// (clone3, CLONE_INTO_CGROUP), listed, frozen, thawed, counted, removed.
func TestGroupV2(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CI runs as root)")
	}
	mode, err := Detect()
	if err != nil {
		t.Fatal(err)
	}
	if mode == V1 {
		var st fsStat
		if err := statfs("/sys/fs/cgroup/unified", &st); err != nil || !st.isCgroup2 {
			t.Skip("a v1 host without a cgroup2 mount at /sys/fs/cgroup/unified")
		}
		v2Root, forceV2 = "/sys/fs/cgroup/unified", true
		t.Cleanup(func() { v2Root, forceV2 = "/sys/fs/cgroup", false })
	}
	g, err := New("tangram-test/v2")
	if err != nil {
		t.Fatal(err)
	}
	if g.Mode() != V2 {
		t.Fatalf("mode %v", g.Mode())
	}
	fd, closeFD, err := g.FD()
	if err != nil || fd < 0 {
		t.Fatalf("FD: %d %v", fd, err)
	}
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	closeFD()
	defer func() { cmd.Process.Kill(); cmd.Wait(); g.Destroy() }()
	procs, err := g.Procs()
	if err != nil || !slices.Equal(procs, []int{cmd.Process.Pid}) {
		t.Fatalf("procs %v %v, want the cloned process", procs, err)
	}
	if err := g.Freeze(); err != nil {
		t.Fatal(err)
	}
	if f, err := g.Frozen(); err != nil || !f {
		t.Fatalf("frozen %v %v", f, err)
	}
	if err := g.Thaw(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Stats(); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	wait.For(t, 5*time.Second, "the empty group to be removed", func() bool { return g.Destroy() == nil })
}

// TestAddSelf moves a thread into a v1 group and back: a process it forks
// meanwhile is born in the group; the thread and the rest of this process
// end where they were.
func TestAddSelf(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CI runs as root)")
	}
	g, err := New("tangram-test/addself", "pids")
	if err != nil {
		t.Fatal(err)
	}
	if g.Mode() != V1 {
		t.Skip("v1 only: this host runs cgroup v2, where clone3 places a child")
	}
	defer g.Destroy()
	type result struct {
		child, during, after []string
		err                  error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // the thread ends with this goroutine
		var r result
		defer func() { res <- r }()
		tid := syscall.Gettid()
		restore, err := g.AddSelf()
		if err != nil {
			r.err = err
			return
		}
		r.during = groupOf(t, tid)
		cmd := exec.Command("cat", "/proc/self/cgroup")
		out, err := cmd.Output()
		if rerr := restore(); rerr != nil || err != nil {
			r.err = errors.Join(err, rerr)
			return
		}
		r.child = pidsLine(string(out))
		r.after = groupOf(t, tid)
	}()
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	want := "/" + g.Path()
	if len(r.during) != 1 || r.during[0] != want {
		t.Fatalf("thread's pids group while added: %v, want %s", r.during, want)
	}
	if len(r.child) != 1 || r.child[0] != want {
		t.Fatalf("child born in pids group %v, want %s", r.child, want)
	}
	if len(r.after) != 1 || r.after[0] == want {
		t.Fatalf("thread's pids group after restore: %v", r.after)
	}
	if procs, err := g.Procs(); err != nil || len(procs) != 0 {
		t.Fatalf("group still lists %v (%v)", procs, err)
	}
}

func groupOf(t *testing.T, tid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/cgroup", tid))
	if err != nil {
		t.Error(err)
	}
	return pidsLine(string(b))
}

// pidsLine returns the pids hierarchy's path from a /proc/…/cgroup file.
func pidsLine(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) == 3 && parts[1] == "pids" {
			out = append(out, parts[2])
		}
	}
	return out
}
