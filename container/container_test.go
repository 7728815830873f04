package container

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "tmp", "etc", "root"} {
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
