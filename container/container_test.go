package container

import (
	"errors"
	"fmt"
	"io"
	"syscall"

	"bytes"
	"context"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tangram-dev/tangram/container/cgroup"
	"github.com/tangram-dev/tangram/internal/wait"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// needRoot skips a test that needs root (namespaces, cgroups, mounts)
// when the tests do not run as root; CI runs them as root.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: namespaces, cgroups and mounts (CI runs as root)")
	}
}

// busyboxBundle makes a bundle whose root filesystem is Debian's
// busybox-static with a link for every applet, and the default spec
// running args.
func busyboxBundle(t testing.TB, args ...string) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox not found: install Debian's busybox-static (scripts/services.sh does): %v", err)
	}
	out, err := exec.Command(bb, "--list-full").Output()
	if err != nil {
		t.Fatalf("busybox --list-full: %v", err)
	}
	bundle := t.TempDir()
	rootfs := filepath.Join(bundle, "rootfs")
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "tmp", "etc", "root", "proc", "dev", "sys"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "bin/busybox" {
			continue
		}
		os.Symlink("/bin/busybox", filepath.Join(rootfs, applet))
	}
	os.WriteFile(filepath.Join(rootfs, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"), 0o644)
	if err := WriteSpec(bundle, DefaultSpec("rootfs", args)); err != nil {
		t.Fatal(err)
	}
	return bundle
}

func newRuntime(t testing.TB) *Runtime {
	t.Helper()
	r, err := New(Config{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func runOut(t *testing.T, r *Runtime, id string, bundle string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code, err := r.Run(ctx, id, bundle, CreateOptions{Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		t.Fatalf("run %s: %v (stderr %q)", id, err, stderr.String())
	}
	return code, stdout.String(), stderr.String()
}

func TestRunIsolated(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	bundle := busyboxBundle(t, "sh", "-c", "echo pid=$$; hostname; ps -o pid | wc -l; ls /sys/fs/cgroup >/dev/null 2>&1; cat /proc/self/mountinfo | wc -l; exit 7")
	code, out, errOut := runOut(t, r, "iso", bundle)
	if code != 7 {
		t.Fatalf("exit code %d, want 7 (stdout %q stderr %q)", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 3 || lines[0] != "pid=1" || lines[1] != "tangram" {
		t.Fatalf("want PID 1 and hostname tangram, got %q (stderr %q)", out, errOut)
	}
	t.Logf("out: %q", out)
}

// start creates and starts a container from bundle, returning its handle.
func start(t *testing.T, r *Runtime, id, bundle string, opts CreateOptions) *Process {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := r.Create(ctx, id, bundle, opts)
	if err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
	t.Cleanup(func() { r.Delete(context.Background(), id, true) })
	if err := r.Start(ctx, id); err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	return p
}

func editSpec(t *testing.T, bundle string, edit func(s *specs.Spec)) {
	t.Helper()
	s, err := LoadSpec(bundle)
	if err != nil {
		t.Fatal(err)
	}
	s.Root.Path = "rootfs"
	edit(s)
	if err := WriteSpec(bundle, s); err != nil {
		t.Fatal(err)
	}
}

func TestHostHidden(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	// A host process the container must not see, and a host mount it must
	// not see.
	host := exec.Command("sleep", "30")
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { host.Process.Kill(); host.Wait() }()
	wd, _ := os.Getwd()
	bundle := busyboxBundle(t, "sh", "-c", "ps -o pid,comm; echo ---; cat /proc/self/mountinfo")
	code, out, errOut := runOut(t, r, "hidden", bundle)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	procs, mounts, _ := strings.Cut(out, "---")
	if strings.Contains(procs, "sleep") || len(strings.Split(strings.TrimSpace(procs), "\n")) != 3 {
		t.Errorf("container sees processes besides its own sh and ps:\n%s", procs)
	}
	if strings.Contains(mounts, wd) || strings.Contains(mounts, " /work") {
		t.Errorf("container sees host mounts:\n%s", mounts)
	}
}

func TestSecurityDefaults(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	bundle := busyboxBundle(t, "sh", "-c", `grep -E "^(CapBnd|CapEff|CapPrm|NoNewPrivs)" /proc/self/status
echo timer_list=$(cat /proc/timer_list | wc -c)
echo x > /proc/sys/kernel/hostname 2>/dev/null && echo sysctl-writable
touch /sys/x 2>/dev/null && echo sys-writable
echo firmware=$(ls -A /sys/firmware 2>/dev/null | wc -l)
echo dev=$(ls /dev | tr '\n' ' ')`)
	code, out, errOut := runOut(t, r, "secure", bundle)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	// AUDIT_WRITE(29), KILL(5), NET_BIND_SERVICE(10) and nothing else.
	const caps = "0000000020000420"
	for _, want := range []string{"CapPrm:\t" + caps, "CapEff:\t" + caps, "CapBnd:\t" + caps, "NoNewPrivs:\t1", "timer_list=0", "firmware=0"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "writable") {
		t.Errorf("a read-only path was writable:\n%s", out)
	}
	_, devs, _ := strings.Cut(out, "dev=")
	devs = strings.TrimSpace(devs) + " "
	for _, dev := range []string{"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx", "fd", "stdin"} {
		if !strings.Contains(" "+devs, " "+dev+" ") {
			t.Errorf("/dev lacks %s: %q", dev, devs)
		}
	}
}

func TestLifecycle(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	bundle := busyboxBundle(t, "sleep", "60")
	ctx := context.Background()
	p, err := r.Create(ctx, "life", bundle, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Delete(ctx, "life", true) })
	if _, err := r.Create(ctx, "life", bundle, CreateOptions{}); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	st, err := r.State("life")
	if err != nil || st.Status != Created || st.Pid != p.Pid {
		t.Fatalf("state after create: %+v %v", st, err)
	}
	// The process has not begun: the init waits on the FIFO.
	if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.Pid)); !strings.HasPrefix(string(cmd), "container-init") {
		t.Fatalf("created container runs %q before start", cmd)
	}
	if err := r.Delete(ctx, "life", false); !errors.Is(err, ErrRunning) {
		t.Fatalf("delete of a created container without force: %v", err)
	}
	if err := r.Start(ctx, "life"); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx, "life"); !errors.Is(err, ErrNotCreated) {
		t.Fatalf("second start: %v", err)
	}
	// Start returns once the init has taken its go-ahead (as runc's does);
	// the exec of the user's process follows an instant later.
	wait.For(t, 10*time.Second, "the started container to exec sleep", func() bool {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.Pid))
		return strings.HasPrefix(string(cmd), "sleep")
	})
	if st, _ := r.State("life"); st.Status != Running {
		t.Fatalf("status %s after start", st.Status)
	}
	if err := r.Pause("life"); err != nil {
		t.Fatal(err)
	}
	if st, _ := r.State("life"); st.Status != Paused {
		t.Fatalf("status %s after pause", st.Status)
	}
	if err := r.Resume("life"); err != nil {
		t.Fatal(err)
	}
	if st, _ := r.State("life"); st.Status != Running {
		t.Fatalf("status %s after resume", st.Status)
	}
	list, err := r.List()
	if err != nil || len(list) != 1 || list[0].ID != "life" {
		t.Fatalf("list: %v %v", list, err)
	}
	// PID 1 of a namespace gets no signal it has no handler for from
	// inside, but SIGKILL from the host always lands.
	if err := r.Kill("life", syscall.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(); err != nil || code != 128+9 {
		t.Fatalf("exit code %d (%v), want 137", code, err)
	}
	if st, _ := r.State("life"); st.Status != Stopped {
		t.Fatalf("status %s after exit", st.Status)
	}
	if err := r.Delete(ctx, "life", false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.State("life"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("state after delete: %v", err)
	}
}

func limited(t *testing.T, bundle string, res *specs.LinuxResources) {
	editSpec(t, bundle, func(s *specs.Spec) {
		res.Devices = s.Linux.Resources.Devices
		s.Linux.Resources = res
	})
}

func TestPidsLimit(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	// A fork bomb, bounded: 40 background sleeps under a limit of 10.
	bundle := busyboxBundle(t, "sh", "-c", "n=0; for i in $(seq 40); do sleep 5 & n=$((n+1)); done 2>/dev/null; echo started; exit 0")
	limit := int64(10)
	limited(t, bundle, &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &limit}})
	var stderr bytes.Buffer
	p := start(t, r, "pids", bundle, CreateOptions{Stderr: &stderr})
	stats, err := r.Stats("pids")
	if err != nil {
		t.Fatal(err)
	}
	if stats.PidsLimit != 10 {
		t.Fatalf("pids limit %d, want 10", stats.PidsLimit)
	}
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	stats, _ = r.Stats("pids")
	if stats.Pids > 10 {
		t.Fatalf("%d processes under a limit of 10", stats.Pids)
	}
	g, err := cgroup.Open(mustState(t, r, "pids").Cgroup)
	if err != nil {
		t.Fatal(err)
	}
	if n := pidsEvents(t, g); n == 0 {
		t.Fatalf("the pids controller refused no fork (stderr %q)", stderr.String())
	}
}

func mustState(t *testing.T, r *Runtime, id string) *State {
	st, err := r.State(id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// pidsEvents reads how many forks the pids controller refused.
func pidsEvents(t *testing.T, g *cgroup.Group) int {
	b, err := os.ReadFile(filepath.Join(g.Dir("pids"), "pids.events"))
	if err != nil {
		t.Fatal(err)
	}
	var n int
	fmt.Sscanf(strings.TrimPrefix(strings.TrimSpace(string(b)), "max "), "%d", &n)
	return n
}

func TestMemoryLimitOOMKill(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	// dd's 64 MiB block is one buffer, filled from /dev/zero.
	bundle := busyboxBundle(t, "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1")
	limit := int64(16 << 20)
	limited(t, bundle, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &limit}})
	p := start(t, r, "oom", bundle, CreateOptions{})
	code, err := p.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if code != 128+9 {
		t.Fatalf("exit code %d, want 137 (OOM-killed)", code)
	}
	stats, err := r.Stats("oom")
	if err != nil {
		t.Fatal(err)
	}
	if stats.OOMKills == 0 || stats.MemoryLimitBytes != 16<<20 {
		t.Fatalf("stats %+v: want an OOM kill under a 16 MiB limit", stats)
	}
}

func TestCPUQuota(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	// Two busy loops for 1 s under a quota of a fifth of a CPU.
	bundle := busyboxBundle(t, "sh", "-c", "(while :; do :; done) & (while :; do :; done) & sleep 1; kill %1 %2")
	quota, period := int64(20000), uint64(100000)
	limited(t, bundle, &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: &quota, Period: &period}})
	p := start(t, r, "cpu", bundle, CreateOptions{})
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	stats, err := r.Stats("cpu")
	if err != nil {
		t.Fatal(err)
	}
	// 1 s at 0.2 CPU is 200 ms; two unthrottled loops would take 2 s.
	if used := time.Duration(stats.CPUNanos); used > 500*time.Millisecond || used < 50*time.Millisecond {
		t.Fatalf("CPU used %v in 1 s under a 0.2 CPU quota", used)
	}
}

func TestValidateID(t *testing.T) {
	for _, id := range []string{"a", "web-1", "A.b_c", strings.Repeat("x", 128)} {
		if err := ValidateID(id); err != nil {
			t.Errorf("%q: %v", id, err)
		}
	}
	for _, id := range []string{"", "-a", ".a", "a/b", "..", "a b", "é", strings.Repeat("x", 129)} {
		if err := ValidateID(id); err == nil {
			t.Errorf("%q accepted", id)
		}
	}
}

// TestSameAsRunc runs one bundle with Debian's runc and with this runtime:
// what the process sees — its PID, host name, capabilities, devices,
// mounts, limits — must be the same.
func TestSameAsRunc(t *testing.T) {
	needRoot(t)
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Fatal("runc not found: install Debian's runc (scripts/services.sh does)")
	}
	probe := `echo pid=$$; hostname; id
grep -E "^(Cap|NoNewPrivs|Seccomp:)" /proc/self/status
ls /dev | tr '\n' ' '; echo
awk '{print $5, $9}' /proc/self/mountinfo | sort
ulimit -n; cat /proc/sys/kernel/hostname
ip link 2>/dev/null | grep -c "^[0-9]" || ls /sys/class/net | tr '\n' ' '`
	bundle := busyboxBundle(t, "sh", "-c", probe)
	var runcOut bytes.Buffer
	cmd := exec.Command(runc, "--root", t.TempDir(), "run", "-b", bundle, "parity")
	cmd.Stdout, cmd.Stderr = &runcOut, &runcOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("runc: %v\n%s", err, runcOut.String())
	}
	// Both ways of starting a container: from a thread of this process
	// (Run's default) and through the init process.
	for _, init := range []bool{false, true} {
		r, err := New(Config{Root: t.TempDir(), InitProcess: init})
		if err != nil {
			t.Fatal(err)
		}
		before := directLaunches.Load()
		_, ours, errOut := runOut(t, r, "parity", bundle)
		if direct := directLaunches.Load() > before; direct == init {
			t.Fatalf("InitProcess %v: launched directly %v", init, direct)
		}
		if ours != runcOut.String() {
			t.Fatalf("runc and tangram (init process %v) differ\n--- runc\n%s\n--- tangram\n%s\n%s", init, runcOut.String(), ours, errOut)
		}
	}
}

// TestExecTerminal: exec -t gives the process a terminal of the
// container's own devpts as its streams and controlling terminal, owned by
// the process's user; input typed on the master reaches it.
func TestExecTerminal(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	start(t, r, "ext", busyboxBundle(t, "sleep", "60"), CreateOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	copied := make(chan struct{})
	code, err := r.Exec(ctx, "ext", ExecOptions{
		// tty names the terminal on fd 0; ls shows it exists inside the
		// container with the user's ownership; the controlling terminal
		// is field 7 of /proc/self/stat (non-zero when there is one).
		Args:     []string{"sh", "-c", `tty; ls -ln $(tty) | awk '{print $3}'; cut -d' ' -f7 /proc/self/stat; read line; echo got $line; exit 4`},
		User:     &specs.User{UID: 65534, GID: 65534},
		Terminal: true,
		OnConsole: func(console *os.File) {
			console.Write([]byte("typed\n"))
			go func() { defer close(copied); io.Copy(&out, console) }()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-copied:
	case <-time.After(10 * time.Second):
		t.Fatal("the console did not end after the process exited")
	}
	lines := strings.Split(strings.ReplaceAll(strings.TrimSpace(out.String()), "\r", ""), "\n")
	// The terminal echoes the typed line — before the program's first
	// output or after it, as the line discipline gets to it: take it out
	// wherever it is.
	echoed := slices.Index(lines, "typed")
	if echoed < 0 {
		t.Fatalf("exec -t: the typed line was not echoed (output %q)", out.String())
	}
	lines = slices.Delete(lines, echoed, echoed+1)
	want := []string{"/dev/pts/0", "65534", "", "got typed"}
	if code != 4 || len(lines) != len(want) {
		t.Fatalf("exec -t: code %d, output %q; want 4 and lines like %q", code, out.String(), want)
	}
	for i, w := range want {
		if i == 2 {
			if n, err := strconv.Atoi(lines[i]); err != nil || n == 0 {
				t.Fatalf("exec -t: controlling terminal %q, want a device number", lines[i])
			}
			continue
		}
		if lines[i] != w {
			t.Fatalf("exec -t: line %d %q, want %q (output %q)", i, lines[i], w, out.String())
		}
	}
	if _, err := r.Exec(ctx, "ext", ExecOptions{Args: []string{"true"}, Terminal: true}); err == nil || !strings.Contains(err.Error(), "OnConsole") {
		t.Fatalf("exec with a terminal and nowhere to send it: %v", err)
	}
}

func TestExec(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	bundle := busyboxBundle(t, "sh", "-c", "echo inside > /tmp/mark; exec sleep 60")
	editSpec(t, bundle, func(s *specs.Spec) { s.Hostname = "execbox"; s.Process.Env = append(s.Process.Env, "FROM=spec") })
	start(t, r, "ex", bundle, CreateOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wait.For(t, 10*time.Second, "the container's shell to exec sleep", func() bool {
		st, err := r.State("ex")
		if err != nil {
			return false
		}
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", st.Pid))
		return strings.HasPrefix(string(cmd), "sleep")
	})
	var out bytes.Buffer
	code, err := r.Exec(ctx, "ex", ExecOptions{
		Args:   []string{"sh", "-c", `cat /tmp/mark; hostname; echo $FROM $EXTRA; ps -o pid,comm | grep -c sleep; grep CapEff /proc/self/status; read line; echo got $line; exit 3`},
		Env:    []string{"EXTRA=exec"},
		Stdin:  strings.NewReader("typed\n"),
		Stdout: &out, Stderr: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "inside\nexecbox\nspec exec\n1\nCapEff:\t0000000020000420\ngot typed\n"
	if code != 3 || out.String() != want {
		t.Fatalf("exec: code %d output %q, want 3 %q", code, out.String(), want)
	}
	// As another user: the process is that user, this process stays root
	// (credentials were switched on the exec's own thread only).
	out.Reset()
	if code, err := r.Exec(ctx, "ex", ExecOptions{Args: []string{"id", "-u"}, User: &specs.User{UID: 65534, GID: 65534}, Stdout: &out}); err != nil || code != 0 || out.String() != "65534\n" {
		t.Fatalf("exec as 65534: %d %v %q", code, err, out.String())
	}
	// The exec's own thread is ended, not handed back — but its exit may
	// still be under way when Exec returns: it must be gone shortly.
	var changed string
	if !wait.Until(10*time.Second, func() bool {
		changed = ""
		threads, _ := os.ReadDir("/proc/self/task")
		for _, th := range threads {
			st, err := os.ReadFile("/proc/self/task/" + th.Name() + "/status")
			if err == nil && !strings.Contains(string(st), "\nUid:\t0\t0\t0\t0\n") {
				changed = th.Name() + ":\n" + string(st)
			}
		}
		return changed == ""
	}) {
		t.Fatalf("a thread of the runtime kept another user: %s", changed)
	}
	// The exec'd process is in the container's cgroup.
	out.Reset()
	if code, err := r.Exec(ctx, "ex", ExecOptions{Args: []string{"cat", "/proc/self/cgroup"}, Stdout: &out}); err != nil || code != 0 {
		t.Fatalf("exec: %d %v", code, err)
	}
	if !strings.Contains(out.String(), "/tangram/ex\n") {
		t.Fatalf("exec'd process is not in the container's cgroup:\n%s", out.String())
	}
	// The thread that joined the groups to fork it has left them.
	g, err := cgroup.Open(mustState(t, r, "ex").Cgroup)
	if err != nil {
		t.Fatal(err)
	}
	if procs, _ := g.Procs(); slices.Contains(procs, os.Getpid()) {
		t.Fatalf("the test process is still in the container's cgroup: %v", procs)
	}
	if _, err := r.Exec(ctx, "nope", ExecOptions{Args: []string{"true"}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("exec into a missing container: %v", err)
	}
	if _, err := r.Exec(ctx, "ex", ExecOptions{Args: []string{"no-such-program"}}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("exec of a missing program: %v", err)
	}
}

func TestBadSpecs(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	cases := []struct {
		edit func(s *specs.Spec)
		want string
	}{
		{func(s *specs.Spec) { s.Process.Args = []string{"no-such-program"} }, `"no-such-program": not found on PATH`},
		{func(s *specs.Spec) {
			s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_TYPO")
		}, `unknown capability "CAP_TYPO"`},
		{func(s *specs.Spec) { s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActNotify} }, "SCMP_ACT_NOTIFY"},
		{func(s *specs.Spec) { s.Process.Cwd = "relative" }, "must be absolute"},
		{func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: "bogus"})
		}, `unknown namespace type "bogus"`},
		{func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/x", Type: "bind", Source: "/no/such/dir"})
		}, "mount /x: source"},
		{func(s *specs.Spec) {
			s.Process.Rlimits = append(s.Process.Rlimits, specs.POSIXRlimit{Type: "RLIMIT_BOGUS"})
		}, `unknown rlimit "RLIMIT_BOGUS"`},
	}
	for i, c := range cases {
		bundle := busyboxBundle(t, "true")
		editSpec(t, bundle, c.edit)
		id := fmt.Sprintf("bad%d", i)
		_, err := r.Create(context.Background(), id, bundle, CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("case %d: %v, want an error containing %q", i, err, c.want)
		}
		// Nothing is left behind.
		if _, err := r.State(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("case %d: state left after a failed create: %v", i, err)
		}
	}
	if list, _ := r.List(); len(list) != 0 {
		t.Errorf("containers left: %v", list)
	}
}

// TestStartAfterQuickExit: the init writes its byte, execs and the process
// ends between Start's first read of the FIFO and its liveness check —
// the container did start, and Start must say so.
func TestStartAfterQuickExit(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	bundle := busyboxBundle(t, "true")
	p, err := r.Create(context.Background(), "quick", bundle, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Delete(context.Background(), "quick", true) })
	hooked := false
	startRaceHook = func(pid int) {
		if hooked {
			return
		}
		hooked = true
		// The FIFO is open for reading now, so the init gets through its
		// open, writes and execs true: wait until it has exited.
		wait.For(t, 10*time.Second, "the container's process to exit", func() bool {
			_, dead, ok := procStart(pid)
			return !ok || dead
		})
	}
	defer func() { startRaceHook = nil }()
	if err := r.Start(context.Background(), "quick"); err != nil {
		t.Fatalf("start of a container whose process already finished: %v", err)
	}
	if code, err := p.Wait(); err != nil || code != 0 {
		t.Fatalf("exit %d %v", code, err)
	}
}

// TestUserNamespace maps the container's root to an unprivileged host user:
// root inside, uid 100000 outside, the host's device nodes bound in (mknod
// is refused in a user namespace).
func TestUserNamespace(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	bundle := busyboxBundle(t, "sh", "-c", "id -u; cat /proc/self/uid_map; echo x > /dev/null && echo devnull-ok; touch /etc/passwd 2>/dev/null || echo host-root-files-read-only; exec sleep 60")
	// The mapped root is an unprivileged user on the host: it must be able
	// to reach the root filesystem (t.TempDir makes 0700 directories).
	for d := bundle; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	editSpec(t, bundle, func(s *specs.Spec) {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
		s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	})
	var out syncBuffer
	p := start(t, r, "userns", bundle, CreateOptions{Stdout: &out, Stderr: &out})
	wait.For(t, 10*time.Second, "the container's output", func() bool {
		return strings.Contains(out.String(), "host-root-files-read-only")
	})
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), "Uid:\t100000\t100000\t100000\t100000") {
		t.Fatalf("the container's process is not uid 100000 on the host:\n%s", status)
	}
	got := strings.Fields(out.String())
	want := []string{"0", "0", "100000", "65536", "devnull-ok", "host-root-files-read-only"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("inside the user namespace: %q, want %q", got, want)
	}
	if _, err := r.Exec(context.Background(), "userns", ExecOptions{Args: []string{"true"}}); err == nil || !strings.Contains(err.Error(), "user namespace") {
		t.Fatalf("exec into a user namespace: %v", err)
	}
}

// syncBuffer is a bytes.Buffer safe to read while a copier writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestTerminal: a container with process.terminal gets a pseudo-terminal
// of its own /dev/pts as its streams and controlling terminal; the creator
// holds the master.
func TestTerminal(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	bundle := busyboxBundle(t, "sh", "-c", "tty; stty size; read x; echo got $x; exit 4")
	editSpec(t, bundle, func(s *specs.Spec) {
		s.Process.Terminal = true
		s.Process.ConsoleSize = &specs.Box{Height: 40, Width: 100}
	})
	ctx := context.Background()
	p, err := r.Create(ctx, "tty", bundle, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Delete(ctx, "tty", true) })
	if p.Console == nil {
		t.Fatal("no console for a terminal container")
	}
	defer p.Console.Close()
	if err := r.Start(ctx, "tty"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Console.Write([]byte("abc\n")); err != nil {
		t.Fatal(err)
	}
	out := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(p.Console) // EIO once the process is gone
		out <- string(b)
	}()
	code, err := p.Wait()
	if err != nil || code != 4 {
		t.Fatalf("exit %d %v", code, err)
	}
	p.Console.Close()
	got := wait.Receive(t, 10*time.Second, "the console's output", out)
	for _, want := range []string{"/dev/pts/0", "40 100", "got abc"} {
		if !strings.Contains(got, want) {
			t.Errorf("console output lacks %q:\n%q", want, got)
		}
	}
}

// TestLaunchInCgroup: a container launched without an init is born in its
// cgroup with its limits, and with its rlimits.
func TestLaunchInCgroup(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	bundle := busyboxBundle(t, "sh", "-c", "cat /proc/self/cgroup; ulimit -n; dd if=/dev/zero of=/dev/null bs=64M count=1")
	limit := int64(16 << 20)
	editSpec(t, bundle, func(s *specs.Spec) {
		s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &limit, Swap: &limit}
		s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 321, Soft: 123}}
	})
	spec, err := LoadSpec(bundle)
	if err != nil {
		t.Fatal(err)
	}
	before := directLaunches.Load()
	var out bytes.Buffer
	ctx := context.Background()
	p, err := r.Launch(ctx, "launched", bundle, spec, CreateOptions{Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Delete(ctx, "launched", true) })
	if directLaunches.Load() == before {
		t.Fatal("not launched directly")
	}
	code, err := p.Wait()
	if err != nil || code != 137 {
		t.Fatalf("exit %d %v, want 137 (OOM-killed); output %q", code, err, out.String())
	}
	if !strings.Contains(out.String(), "/tangram/launched\n") || !strings.Contains(out.String(), "\n123\n") {
		t.Fatalf("not in its cgroup or without its rlimit:\n%s", out.String())
	}
	if st, err := r.Stats("launched"); err != nil || st.OOMKills == 0 {
		t.Fatalf("stats %+v %v: want an OOM kill", st, err)
	}
}

// TestLaunchAsUser: launched directly as an unprivileged user, the process
// is that user with no capabilities; the runtime stays root.
func TestLaunchAsUser(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	bundle := busyboxBundle(t, "sh", "-c", "id -u; grep CapEff /proc/self/status; ls /proc | grep -c '^[0-9]'")
	editSpec(t, bundle, func(s *specs.Spec) {
		s.Process.User = specs.User{UID: 65534, GID: 65534}
		s.Process.Rlimits = nil // with rlimits, another user takes the init process
	})
	before := directLaunches.Load()
	code, out, errOut := runOut(t, r, "asuser", bundle)
	if directLaunches.Load() == before {
		t.Fatal("not launched directly")
	}
	if code != 0 || out != "65534\nCapEff:\t0000000000000000\n3\n" {
		t.Fatalf("exit %d, output %q %q", code, out, errOut)
	}
	if os.Geteuid() != 0 {
		t.Fatal("the runtime is no longer root")
	}
}
