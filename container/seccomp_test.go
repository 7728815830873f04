package container

import (
	"context"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/tangram-dev/tangram/container/seccomp"
)

// runAll runs bundle as id and returns its exit code and its output,
// stdout then stderr.
func runAll(t *testing.T, r *Runtime, id, bundle string) (int, string) {
	t.Helper()
	code, out, errOut := runOut(t, r, id, bundle)
	return code, out + errOut
}

// TestSeccompProfile: the kernel enforces a bundle's filter — calls by
// name, a condition on an argument, the errno asked for — and calls the
// profile does not name pass.
func TestSeccompProfile(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	eacces := uint(unix.EACCES)
	b := busyboxBundle(t, "sh", "-c", `mkdir /tmp/a || echo no mkdir; kill -0 $$ && echo signal 0 sent; kill -9 $$ || echo not killed; echo end`)
	editSpec(t, b, func(s *specs.Spec) {
		s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno},
			{Names: []string{"kill"}, Action: specs.ActErrno, ErrnoRet: &eacces, Args: []specs.LinuxSeccompArg{{Index: 1, Value: 9, Op: specs.OpEqualTo}}},
		}}
	})
	code, out := runAll(t, r, "sc1", b)
	for _, want := range []string{"Operation not permitted", "no mkdir", "signal 0 sent", "Permission denied", "not killed", "end"} {
		if !strings.Contains(out, want) {
			t.Fatalf("under the profile: exit %d, output %q lacks %q", code, out, want)
		}
	}
	// The same bundle without the filter: mkdir works, and kill -9
	// succeeds (the shell is its PID namespace's init, so the signal is
	// dropped, but the call is not refused).
	editSpec(t, b, func(s *specs.Spec) { s.Linux.Seccomp = nil })
	if code, out := runAll(t, r, "sc2", b); code != 0 || out != "signal 0 sent\nend\n" {
		t.Fatalf("without the profile: exit %d output %q, want mkdir and kill -9 working", code, out)
	}
	// A kill action ends the process with SIGSYS.
	editSpec(t, b, func(s *specs.Spec) {
		s.Process.Args = []string{"sh", "-c", "echo before; exec mkdir /tmp/b"}
		s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActKillProcess},
		}}
	})
	if code, out := runAll(t, r, "sc3", b); code != 128+int(unix.SIGSYS) || out != "before\n" {
		t.Fatalf("kill action: exit %d output %q, want %d", code, out, 128+int(unix.SIGSYS))
	}
	// A profile that cannot be built is refused at create, naming why.
	editSpec(t, b, func(s *specs.Spec) {
		s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Architectures: []specs.Arch{"SCMP_ARCH_MIPS"}}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := r.Run(ctx, "sc4", b, CreateOptions{}); err == nil || !strings.Contains(err.Error(), "leave out this machine's") {
		t.Fatalf("a profile for another machine: %v", err)
	}
}

// TestSeccompDefault: the default profile lets a shell work and refuses
// a user namespace, which the same container can make without it; with
// no_new_privs off the filter goes on before the capabilities are
// dropped and holds as well.
func TestSeccompDefault(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	b := busyboxBundle(t, "sh", "-c", `grep Seccomp: /proc/self/status; ls / >/dev/null && echo ls works; unshare -U true && echo userns made || echo userns refused`)
	code, out := runAll(t, r, "sd0", b)
	if code != 0 || !strings.Contains(out, "Seccomp:\t0") || !strings.Contains(out, "userns made") {
		t.Fatalf("without a filter: exit %d output %q; want a user namespace made (else this test proves nothing)", code, out)
	}
	for i, nnp := range []bool{true, false} {
		editSpec(t, b, func(s *specs.Spec) {
			s.Linux.Seccomp = seccomp.Default()
			s.Process.NoNewPrivileges = nnp
		})
		code, out := runAll(t, r, "sd"+string(rune('1'+i)), b)
		if code != 0 || !strings.Contains(out, "Seccomp:\t2") || !strings.Contains(out, "ls works") || !strings.Contains(out, "userns refused") {
			t.Fatalf("default profile, no_new_privs %v: exit %d output %q", nnp, code, out)
		}
	}
}
