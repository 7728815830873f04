//go:build linux && (amd64 || arm64)

package seccomp

import (
	"encoding/binary"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// run evaluates a compiled filter on one system call with x/net/bpf's
// interpreter. The interpreter loads words big-endian, so each 32-bit
// field is stored that way at the offset the kernel's seccomp_data has it.
func run(t *testing.T, f *Filter, arch, nr uint32, args ...uint64) uint32 {
	t.Helper()
	raw := make([]bpf.RawInstruction, len(f.prog))
	for i, in := range f.prog {
		raw[i] = bpf.RawInstruction{Op: in.Code, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("the program has instructions the interpreter does not know")
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatalf("the interpreter refuses the program: %v", err)
	}
	data := make([]byte, 64)
	binary.BigEndian.PutUint32(data[0:], nr)
	binary.BigEndian.PutUint32(data[4:], arch)
	for i, a := range args {
		binary.BigEndian.PutUint32(data[16+8*i:], uint32(a))       // low half first, as on a little-endian machine
		binary.BigEndian.PutUint32(data[16+8*i+4:], uint32(a>>32)) // then the high half
	}
	out, err := vm.Run(data)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(out)
}

func nr(t *testing.T, name string) uint32 {
	t.Helper()
	n, ok := Number(name)
	if !ok {
		t.Fatalf("no number for %s", name)
	}
	return n
}

func compile(t *testing.T, p *specs.LinuxSeccomp) *Filter {
	t.Helper()
	f, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

const (
	allow = unix.SECCOMP_RET_ALLOW
	eperm = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
)

// TestComparisons: every operator on 64-bit values, at the edges of the
// 32-bit halves, agrees with Go's comparison.
func TestComparisons(t *testing.T) {
	values := []uint64{0, 1, 2, 0x7fffffff, 0xfffffffe, 0xffffffff, 1 << 32, 1<<32 + 1, 1<<32 + 0xffffffff, 2 << 32, 0xffffffff00000000, ^uint64(0) - 1, ^uint64(0)}
	ops := map[specs.LinuxSeccompOperator]func(a, v uint64) bool{
		specs.OpEqualTo:      func(a, v uint64) bool { return a == v },
		specs.OpNotEqual:     func(a, v uint64) bool { return a != v },
		specs.OpGreaterThan:  func(a, v uint64) bool { return a > v },
		specs.OpGreaterEqual: func(a, v uint64) bool { return a >= v },
		specs.OpLessThan:     func(a, v uint64) bool { return a < v },
		specs.OpLessEqual:    func(a, v uint64) bool { return a <= v },
	}
	getpid := nr(t, "getpid")
	for op, holds := range ops {
		for _, v := range values {
			f := compile(t, &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"getpid"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 2, Value: v, Op: op}}},
			}})
			for _, a := range values {
				want := uint32(allow)
				if holds(a, v) {
					want = eperm
				}
				if got := run(t, f, auditArch, getpid, 0, 0, a); got != want {
					t.Errorf("arg %#x %s %#x: filter returns %#x, want %#x", a, op, v, got, want)
				}
			}
		}
	}
	// Masked: (arg & mask) == value, both halves.
	f := compile(t, &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
		{Names: []string{"getpid"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 5, Value: 0xf0000000f0, ValueTwo: 0x1000000010, Op: specs.OpMaskedEqual}}},
	}})
	for _, a := range values {
		want := uint32(allow)
		if a&0xf0000000f0 == 0x1000000010 {
			want = eperm
		}
		if got := run(t, f, auditArch, getpid, 0, 0, 0, 0, 0, a); got != want {
			t.Errorf("masked arg %#x: %#x, want %#x", a, got, want)
		}
	}
	if got := run(t, f, auditArch, getpid, 0, 0, 0, 0, 0, 0x1200000015); got != eperm {
		t.Errorf("masked match: %#x, want EPERM", got)
	}
}

// TestRulesAndPrecedence: conditions of one rule all hold (AND), rules of
// one call are alternatives where the most restrictive match wins, other
// calls get the default, errno values are passed on.
func TestRulesAndPrecedence(t *testing.T) {
	e := uint(unix.EACCES)
	f := compile(t, &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
		{Names: []string{"kill", "tgkill"}, Action: specs.ActAllow},
		{Names: []string{"kill"}, Action: specs.ActKillProcess, Args: []specs.LinuxSeccompArg{
			{Index: 0, Value: 1, Op: specs.OpEqualTo}, {Index: 1, Value: 9, Op: specs.OpEqualTo}}},
		{Names: []string{"openat"}, Action: specs.ActErrno, ErrnoRet: &e, Args: []specs.LinuxSeccompArg{{Index: 0, Value: 5, Op: specs.OpEqualTo}}},
		{Names: []string{"openat"}, Action: specs.ActAllow},
		{Names: []string{"no_such_call_anywhere"}, Action: specs.ActAllow},
	}})
	kill, openat := nr(t, "kill"), nr(t, "openat")
	for _, c := range []struct {
		nr   uint32
		args []uint64
		want uint32
	}{
		{kill, []uint64{1, 9}, unix.SECCOMP_RET_KILL_PROCESS},
		{kill, []uint64{1, 15}, allow},
		{kill, []uint64{2, 9}, allow},
		{nr(t, "tgkill"), []uint64{1, 9}, allow},
		{openat, []uint64{5}, unix.SECCOMP_RET_ERRNO | uint32(unix.EACCES)},
		{openat, []uint64{6}, allow},
		{nr(t, "getpid"), nil, eperm},
		{999, nil, eperm},
	} {
		if got := run(t, f, auditArch, c.nr, c.args...); got != c.want {
			t.Errorf("call %d %v: %#x, want %#x", c.nr, c.args, got, c.want)
		}
	}
	if strings.Join(f.Skipped, ",") != "no_such_call_anywhere" {
		t.Errorf("skipped %v", f.Skipped)
	}
}

// TestForeignABI: a call through an ABI without a table is refused with
// the default when that refuses, and kills when the default allows.
func TestForeignABI(t *testing.T) {
	deny := compile(t, &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{Names: []string{"getpid"}, Action: specs.ActAllow}}})
	allowAll := compile(t, &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"getpid"}, Action: specs.ActErrno}}})
	getpid := nr(t, "getpid")
	if got := run(t, deny, unix.AUDIT_ARCH_I386, getpid); got != eperm {
		t.Errorf("i386 call under a deny-by-default profile: %#x, want EPERM", got)
	}
	if got := run(t, allowAll, unix.AUDIT_ARCH_I386, getpid); got != unix.SECCOMP_RET_KILL_PROCESS {
		t.Errorf("i386 call under an allow-by-default profile: %#x, want kill", got)
	}
	if x32Bit != 0 {
		if got := run(t, allowAll, auditArch, getpid|x32Bit); got != unix.SECCOMP_RET_KILL_PROCESS {
			t.Errorf("x32 call: %#x, want kill", got)
		}
	}
	if got := run(t, deny, auditArch, getpid); got != allow {
		t.Errorf("native getpid: %#x, want allow", got)
	}
}

// TestRefused: what the compiler cannot honour is an error naming it.
func TestRefused(t *testing.T) {
	for _, c := range []struct {
		p    specs.LinuxSeccomp
		want string
	}{
		{specs.LinuxSeccomp{DefaultAction: specs.ActNotify}, "SCMP_ACT_NOTIFY"},
		{specs.LinuxSeccomp{DefaultAction: specs.ActAllow, ListenerPath: "/run/x.sock"}, "listener"},
		{specs.LinuxSeccomp{DefaultAction: "SCMP_ACT_MAYBE"}, `unknown action "SCMP_ACT_MAYBE"`},
		{specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Flags: []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_NEW_LISTENER"}}, "flag"},
		{specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Architectures: []specs.Arch{"SCMP_ARCH_MIPS"}}, "leave out this machine's"},
		{specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 6, Op: specs.OpEqualTo}}}}}, "argument index 6"},
		{specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 0, Op: "SCMP_CMP_ABOUT"}}}}}, "unknown operator"},
	} {
		if _, err := Compile(&c.p); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %q", c.p, err, c.want)
		}
	}
}

// TestDefaultProfile: the default profile allows ordinary calls and
// refuses the ones that reach outside a container.
func TestDefaultProfile(t *testing.T) {
	f := compile(t, Default())
	if f.Len() > 1200 {
		t.Errorf("the default profile is %d instructions", f.Len())
	}
	if len(f.Skipped) != 0 {
		t.Errorf("the default profile names calls the table lacks: %v", f.Skipped)
	}
	enosys := unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	for _, c := range []struct {
		name string
		args []uint64
		want uint32
	}{
		{"read", nil, allow}, {"execve", nil, allow}, {"ptrace", nil, allow},
		{"mount", nil, eperm}, {"unshare", nil, eperm}, {"setns", nil, eperm}, {"keyctl", nil, eperm}, {"bpf", nil, eperm},
		{"clone", []uint64{uint64(unix.SIGCHLD) | unix.CLONE_VM}, allow},
		{"clone", []uint64{uint64(unix.SIGCHLD) | unix.CLONE_NEWUSER}, eperm},
		{"clone", []uint64{unix.CLONE_NEWNET}, eperm},
		{"clone3", nil, enosys},
		{"socket", []uint64{unix.AF_INET}, allow},
		{"socket", []uint64{unix.AF_VSOCK}, eperm},
		{"personality", []uint64{0xffffffff}, allow},
		{"personality", []uint64{0x0040000}, eperm}, // ADDR_NO_RANDOMIZE
	} {
		if got := run(t, f, auditArch, nr(t, c.name), c.args...); got != c.want {
			t.Errorf("default profile, %s %v: %#x, want %#x", c.name, c.args, got, c.want)
		}
	}
	if got := run(t, f, auditArch, 1000); got != eperm {
		t.Errorf("a call newer than the table: %#x, want EPERM", got)
	}
}
