package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/tangram-dev/tangram/container"
	"github.com/tangram-dev/tangram/internal/wait"
)

// ociBin is tangram-oci built once for the tests.
var ociBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tangram-oci-test-")
	if err != nil {
		panic(err)
	}
	ociBin = filepath.Join(dir, "tangram-oci")
	b := exec.Command("go", "build", "-o", ociBin, ".")
	b.Stderr = os.Stderr
	if err := b.Run(); err != nil {
		panic("build tangram-oci: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: namespaces, cgroups and mounts (CI runs as root)")
	}
}

// bundle makes a busybox-static bundle with the default spec running args.
func bundle(t *testing.T, args ...string) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox not found: install Debian's busybox-static (scripts/services.sh does): %v", err)
	}
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"sh", "sleep", "true", "echo", "hostname"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	if err := container.WriteSpec(dir, container.DefaultSpec("rootfs", args)); err != nil {
		t.Fatal(err)
	}
	return dir
}

// oci runs tangram-oci and returns its stdout, stderr and exit code. The
// streams are files, not pipes: a container made by create keeps the
// streams it was given (as runc's do), and waiting for a pipe to close
// would wait for the container.
func oci(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return ociAs(t, nil, ociBin, args...)
}

// ociAs is oci run as another user (cred nil: this one) from bin.
func ociAs(t *testing.T, cred *syscall.Credential, bin string, args ...string) (string, string, int) {
	t.Helper()
	dir := t.TempDir()
	stdout, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR=")
		os.Chown(stdout.Name(), int(cred.Uid), int(cred.Gid))
		os.Chown(stderr.Name(), int(cred.Uid), int(cred.Gid))
	}
	err = cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("tangram-oci %v: %v", args, err)
	}
	read := func(f *os.File) string {
		b, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	return read(stdout), read(stderr), code
}

// TestRunPassesOutputAndExitCode: `run` as runc's — the container's
// output on ours, its exit code as ours, its state gone afterwards.
func TestRunPassesOutputAndExitCode(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	b := bundle(t, "sh", "-c", "echo hello from $(hostname); exit 7")
	out, errOut, code := oci(t, "--root", root, "run", "--bundle", b, "c1")
	if code != 7 || strings.TrimSpace(out) != "hello from tangram" {
		t.Fatalf("run: code %d, stdout %q, stderr %q; want 7 and %q", code, out, errOut, "hello from tangram")
	}
	if _, errOut, code := oci(t, "--root", root, "state", "c1"); code == 0 || !strings.Contains(errOut, "no such container") {
		t.Fatalf("state after run: code %d, stderr %q; want the container gone", code, errOut)
	}
}

// TestRuncLifecycle walks the verbs a containerd-style caller uses, in its
// order: create (the process waits), state, start, kill, state, delete.
func TestRuncLifecycle(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	b := bundle(t, "sleep", "600")
	pidFile := filepath.Join(t.TempDir(), "pid")
	if _, errOut, code := oci(t, "--root", root, "create", "--bundle", b, "--pid-file", pidFile, "c2"); code != 0 {
		t.Fatalf("create: code %d: %s", code, errOut)
	}
	t.Cleanup(func() { oci(t, "--root", root, "delete", "--force", "c2") })
	state := func() container.State {
		t.Helper()
		out, errOut, code := oci(t, "--root", root, "state", "c2")
		if code != 0 {
			t.Fatalf("state: code %d: %s", code, errOut)
		}
		var st container.State
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("state is not JSON: %v: %s", err, out)
		}
		return st
	}
	st := state()
	pid, _ := os.ReadFile(pidFile)
	if st.Status != container.Created || st.Pid <= 0 || strings.TrimSpace(string(pid)) != strconv.Itoa(st.Pid) {
		t.Fatalf("after create: %+v, pid file %q; want created with the pid file's PID", st, pid)
	}
	if _, errOut, code := oci(t, "--root", root, "start", "c2"); code != 0 {
		t.Fatalf("start: code %d: %s", code, errOut)
	}
	if st := state(); st.Status != container.Running {
		t.Fatalf("after start: status %s, want running", st.Status)
	}
	if _, errOut, code := oci(t, "--root", root, "kill", "c2", "KILL"); code != 0 {
		t.Fatalf("kill: code %d: %s", code, errOut)
	}
	wait.For(t, 10*time.Second, "the container stopped after kill", func() bool { return state().Status == container.Stopped })
	if _, errOut, code := oci(t, "--root", root, "delete", "c2"); code != 0 {
		t.Fatalf("delete: code %d: %s", code, errOut)
	}
}

// TestLogFileGetsTheError: with runc's --log and --log-format json, a
// failing command leaves its error as the file's last JSON line (where
// containerd looks for it) as well as on stderr.
func TestLogFileGetsTheError(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log.json")
	_, errOut, code := oci(t, "--root", t.TempDir(), "--log", log, "--log-format", "json", "state", "missing")
	if code != 1 || !strings.Contains(errOut, "no such container: missing") {
		t.Fatalf("state of a missing container: code %d, stderr %q", code, errOut)
	}
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var last struct{ Level, Msg, Time string }
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatalf("last log line is not JSON: %v: %q", err, lines[len(lines)-1])
	}
	if last.Level != "error" || !strings.Contains(last.Msg, "no such container: missing") || last.Time == "" {
		t.Fatalf("last log line %+v: want the error", last)
	}
}

// TestRefusedFlags: flags we do not honour fail naming what to do, never
// silently run with other semantics.
func TestRefusedFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--systemd-cgroup", "list"}, "--systemd-cgroup: not supported"},
		{[]string{"--log-format", "xml", "list"}, `--log-format "xml"`},
		{[]string{"-o", "csv", "list"}, `--output "csv"`},
		{[]string{"-o", "yaml", "list"}, "prints table or json"},
		// The lean binary runs bundles; images are the full binary's.
		{[]string{"run", "--image", "busybox", "img1"}, "need the image store"},
	} {
		_, errOut, code := oci(t, append([]string{"--root", t.TempDir()}, tc.args...)...)
		if code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: code %d, stderr %q; want 1 and %q", tc.args, code, errOut, tc.want)
		}
	}
}

// monitors returns the PIDs of monitor processes for container id.
func monitors(id string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.HasSuffix(string(cmd), "\x00container-monitor\x00"+id+"\x00") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestDetachedLogRotation: run -d --log-max-size hands the container to a
// monitor that rotates its log at line ends, keeps --log-max-files files,
// records the exit code, and leaves nothing running once it ends.
func TestDetachedLogRotation(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	b := bundle(t, "sh", "-c", `i=0; while [ $i -lt 200 ]; do echo "line $i of the log"; i=$((i+1)); done; exit 3`)
	if _, errOut, code := oci(t, "--root", root, "run", "-d", "--log-max-size", "1k", "--log-max-files", "2", "--bundle", b, "m1"); code != 0 {
		t.Fatalf("run -d: code %d: %s", code, errOut)
	}
	t.Cleanup(func() { oci(t, "--root", root, "delete", "--force", "m1") })
	var st container.State
	wait.For(t, 10*time.Second, "the container to stop with its exit code recorded", func() bool {
		out, _, code := oci(t, "--root", root, "inspect", "m1")
		return code == 0 && json.Unmarshal([]byte(out), &st) == nil && st.Status == container.Stopped && st.ExitCode != nil
	})
	if *st.ExitCode != 3 {
		t.Fatalf("exit code %d, want 3", *st.ExitCode)
	}
	wait.For(t, 10*time.Second, "the monitor to exit", func() bool { return len(monitors("m1")) == 0 })
	logDir := filepath.Join(root, ".logs")
	ents, err := os.ReadDir(logDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
		fi, _ := e.Info()
		data, _ := os.ReadFile(filepath.Join(logDir, e.Name()))
		if fi.Size() > 1024 || !strings.HasSuffix(string(data), "\n") {
			t.Errorf("%s: %d bytes, ends %q; want at most 1k of whole lines", e.Name(), fi.Size(), data[max(0, len(data)-10):])
		}
	}
	if strings.Join(names, " ") != "m1.log m1.log.1" {
		t.Fatalf("log files %v, want m1.log and m1.log.1", names)
	}
	out, errOut, code := oci(t, "--root", root, "logs", "m1")
	if code != 0 {
		t.Fatalf("logs: code %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	first, err := strconv.Atoi(strings.Fields(lines[0])[1])
	if err != nil || len(lines) < 20 {
		t.Fatalf("logs printed %d lines starting %q", len(lines), lines[0])
	}
	for i, l := range lines {
		if want := "line " + strconv.Itoa(first+i) + " of the log"; l != want {
			t.Fatalf("logs line %d: %q, want %q (the kept lines in order, ending with the last)", i, l, want)
		}
	}
	if first+len(lines) != 200 {
		t.Fatalf("logs end at line %d, want 199", first+len(lines)-1)
	}
	if _, _, code := oci(t, "--root", root, "delete", "m1"); code != 0 {
		t.Fatal("delete failed")
	}
	if ents, _ := os.ReadDir(logDir); len(ents) != 0 {
		t.Fatalf("delete left log files: %v", ents)
	}
}

// TestDetachedRemove: run -d --rm deletes the container when it ends —
// here killed from outside — and its monitor leaves.
func TestDetachedRemove(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	pidFile := filepath.Join(t.TempDir(), "pid")
	if _, errOut, code := oci(t, "--root", root, "run", "-d", "--rm", "--pid-file", pidFile, "--bundle", bundle(t, "sleep", "600"), "m2"); code != 0 {
		t.Fatalf("run -d --rm: code %d: %s", code, errOut)
	}
	t.Cleanup(func() { oci(t, "--root", root, "delete", "--force", "m2") })
	if len(monitors("m2")) != 1 {
		t.Fatalf("monitors for m2: %v, want one", monitors("m2"))
	}
	pid, err := os.ReadFile(pidFile)
	if err != nil || strings.TrimSpace(string(pid)) == "" {
		t.Fatalf("pid file: %q %v", pid, err)
	}
	if _, errOut, code := oci(t, "--root", root, "kill", "m2", "KILL"); code != 0 {
		t.Fatalf("kill: code %d: %s", code, errOut)
	}
	wait.For(t, 10*time.Second, "the container to be deleted", func() bool {
		_, errOut, code := oci(t, "--root", root, "state", "m2")
		return code != 0 && strings.Contains(errOut, "no such container")
	})
	wait.For(t, 10*time.Second, "the monitor to exit", func() bool { return len(monitors("m2")) == 0 })
	// A bundle that cannot start: the error comes back, no monitor stays.
	_, errOut, code := oci(t, "--root", root, "run", "-d", "--rm", "--bundle", filepath.Join(t.TempDir(), "missing"), "m3")
	if code != 1 || !strings.Contains(errOut, "config.json") {
		t.Fatalf("run -d --rm of a missing bundle: code %d, %q", code, errOut)
	}
	if len(monitors("m3")) != 0 {
		t.Fatal("a monitor stayed after a failed start")
	}
	if _, errOut, code := oci(t, "--root", root, "run", "--log-max-size", "1m", "--bundle", bundle(t, "true"), "m4"); code != 1 || !strings.Contains(errOut, "--log-max-size is for run -d") {
		t.Fatalf("--log-max-size without -d: code %d, %q", code, errOut)
	}
}

// TestConsoleSocket: create with a terminal hands the master to the
// --console-socket listener (runc's protocol, what containerd's shim
// listens with); after start, what is typed on it reaches the process
// and its output comes back, on a terminal of the container's own.
func TestConsoleSocket(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	b := bundle(t, "sh", "-c", "tty; read line; echo got $line")
	s, err := container.LoadSpec(b)
	if err != nil {
		t.Fatal(err)
	}
	s.Process.Terminal = true
	s.Root.Path = "rootfs"
	if err := container.WriteSpec(b, s); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "console.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan *os.File, 1)
	go func() {
		conn, err := ln.AcceptUnix()
		if err != nil {
			got <- nil
			return
		}
		defer conn.Close()
		buf, oob := make([]byte, 256), make([]byte, unix.CmsgSpace(4))
		_, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil {
			got <- nil
			return
		}
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		if len(msgs) != 1 {
			got <- nil
			return
		}
		fds, _ := unix.ParseUnixRights(&msgs[0])
		if len(fds) != 1 {
			got <- nil
			return
		}
		got <- os.NewFile(uintptr(fds[0]), "console")
	}()
	if _, errOut, code := oci(t, "--root", root, "create", "--console-socket", sock, "--bundle", b, "tty1"); code != 0 {
		t.Fatalf("create --console-socket: code %d: %s", code, errOut)
	}
	t.Cleanup(func() { oci(t, "--root", root, "delete", "--force", "tty1") })
	var console *os.File
	select {
	case console = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("nothing came to the console socket")
	}
	if console == nil {
		t.Fatal("the console socket got no descriptor")
	}
	defer console.Close()
	if _, errOut, code := oci(t, "--root", root, "start", "tty1"); code != 0 {
		t.Fatalf("start: code %d: %s", code, errOut)
	}
	console.Write([]byte("hello\n"))
	var out bytes.Buffer
	done := make(chan struct{})
	go func() { defer close(done); io.Copy(&out, console) }() // ends with EIO when the process has gone
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the terminal did not close; output so far %q", out.String())
	}
	text := strings.ReplaceAll(out.String(), "\r", "")
	if !strings.Contains(text, "/dev/pts/0\n") || !strings.Contains(text, "got hello\n") {
		t.Fatalf("through the console: %q; want the container's /dev/pts/0 and the typed line echoed back", text)
	}
	// Without a socket, a terminal container is refused by name.
	if _, errOut, code := oci(t, "--root", root, "create", "--bundle", b, "tty2"); code != 1 || !strings.Contains(errOut, "--console-socket") {
		t.Fatalf("create of a terminal container without a socket: code %d, %q", code, errOut)
	}
}

// TestRootless: a runtime that is not root (nobody here) runs a bundle in
// a user namespace mapping it to root inside, without cgroups: the
// process is root inside and nobody outside, ps finds it by its PID
// namespace, pause says why it cannot, limits are refused by name.
func TestRootless(t *testing.T) {
	needRoot(t) // to become nobody
	for _, f := range []string{"/proc/sys/kernel/unprivileged_userns_clone", "/proc/sys/user/max_user_namespaces"} {
		if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == "0" {
			t.Skipf("%s is 0: this kernel refuses user namespaces to unprivileged users", f)
		}
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	// Everything nobody uses is nobody's: the binary, the bundle, its
	// home for state.
	home := t.TempDir()
	os.Chmod(home, 0o755)
	bin := filepath.Join(home, "tangram-oci")
	data, err := os.ReadFile(ociBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	b := bundle(t, "true")
	os.Chmod(filepath.Dir(b), 0o755)
	root := filepath.Join(home, "state")
	for _, d := range []string{b, root} {
		os.MkdirAll(d, 0o755)
		filepath.Walk(d, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, 65534, 65534) })
	}
	os.Remove(filepath.Join(b, "config.json"))
	as := func(args ...string) (string, string, int) {
		t.Helper()
		return ociAs(t, nobody, bin, append([]string{"--root", root}, args...)...)
	}
	// spec, run as nobody, writes a rootless spec by default.
	if _, errOut, code := as("spec", "--bundle", b, "--", "sh", "-c", "id -u; cat /proc/self/uid_map; touch /made; echo pid $$"); code != 0 {
		t.Fatalf("spec as nobody: code %d: %s", code, errOut)
	}
	out, errOut, code := as("run", "--bundle", b, "r1")
	if code != 0 || strings.Join(strings.Fields(out), " ") != "0 0 65534 1 pid 1" {
		t.Fatalf("rootless run: code %d, stdout %q, stderr %q; want root inside mapped from 65534, PID 1", code, out, errOut)
	}
	if fi, err := os.Stat(filepath.Join(b, "rootfs", "made")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Fatalf("a file made inside: %v; want it owned by nobody outside", err)
	}
	// Detached: ps without a cgroup, pause refused with the reason.
	os.Remove(filepath.Join(b, "config.json"))
	if _, errOut, code := as("spec", "--bundle", b, "--", "sleep", "60"); code != 0 {
		t.Fatalf("spec: %s", errOut)
	}
	if _, errOut, code := as("run", "-d", "--bundle", b, "r2"); code != 0 {
		t.Fatalf("rootless run -d: code %d: %s", code, errOut)
	}
	t.Cleanup(func() { as("delete", "--force", "r2") })
	if out, errOut, code := as("ps", "r2"); code != 0 || !strings.Contains(out, "sleep 60") {
		t.Fatalf("rootless ps: code %d, %q %q", code, out, errOut)
	}
	if _, errOut, code := as("pause", "r2"); code != 1 || !strings.Contains(errOut, "has no cgroup") {
		t.Fatalf("rootless pause: code %d, %q", code, errOut)
	}
	if _, errOut, code := as("delete", "--force", "r2"); code != 0 {
		t.Fatalf("rootless delete -f: code %d: %s", code, errOut)
	}
	// Limits need a cgroup: refused by name.
	s, err := container.LoadSpec(b)
	if err != nil {
		t.Fatal(err)
	}
	limit := int64(64 << 20)
	s.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}
	s.Root.Path = "rootfs"
	if err := container.WriteSpec(b, s); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := as("run", "--bundle", b, "r3"); code != 1 || !strings.Contains(errOut, "resource limits need a cgroup") {
		t.Fatalf("rootless run with a memory limit: code %d, %q", code, errOut)
	}
}
