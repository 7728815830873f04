//go:build linux && (amd64 || arm64)

// Package seccomp compiles the seccomp profile of an OCI runtime spec
// (linux.seccomp) into a classic BPF program for the kernel's seccomp
// filter and installs it — without libseccomp and without cgo.
//
// The program checks the architecture, then the system call number
// against each rule in turn (a linear chain; a profile of 350 calls is
// about 700 instructions, well under the kernel's 4096), then the
// arguments of conditional rules, 64-bit values compared as two 32-bit
// halves. Where several rules of one call match, the most restrictive
// action wins (kill, trap, errno, trace, log, allow), as libseccomp's
// precedence has it. Calls the table does not know are skipped, as runc
// skips names libseccomp cannot resolve. Only the machine's own ABI has a
// table: a call made through another (i386 or x32 on x86-64) gets the
// profile's default action when that refuses, and kills the process when
// the default allows — a deny list cannot be enforced on numbers we do
// not know.
package seccomp

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// syscall is one entry of the generated name table.
type syscall struct {
	name string
	nr   uint32
}

// Number returns the system call number of name on this machine.
func Number(name string) (uint32, bool) {
	i := sort.Search(len(syscalls), func(i int) bool { return syscalls[i].name >= name })
	if i < len(syscalls) && syscalls[i].name == name {
		return syscalls[i].nr, true
	}
	return 0, false
}

// Filter is a compiled profile, ready to install.
type Filter struct {
	prog  []unix.SockFilter
	flags uintptr
	// Skipped names the profile's system calls this machine has no
	// number for.
	Skipped []string
}

// Len is the program's length in instructions.
func (f *Filter) Len() int { return len(f.prog) }

// Install applies the filter to the calling thread (to every thread of
// the process with SECCOMP_FILTER_FLAG_TSYNC). Without CAP_SYS_ADMIN the
// thread must have no_new_privs set first.
func (f *Filter) Install() error {
	prog := unix.SockFprog{Len: uint16(len(f.prog)), Filter: &f.prog[0]}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, f.flags, uintptr(unsafe.Pointer(&prog))); e != 0 {
		return fmt.Errorf("seccomp: install filter: %w", e)
	}
	return nil
}

// actions by precedence: the first in this list wins among matches.
var precedence = []specs.LinuxSeccompAction{
	specs.ActKillProcess, specs.ActKill, specs.ActKillThread, specs.ActTrap, specs.ActErrno, specs.ActTrace, specs.ActLog, specs.ActAllow,
}

// ret returns the filter's return value for an action.
func ret(a specs.LinuxSeccompAction, errnoRet *uint) (uint32, error) {
	data := func(def uint) uint32 {
		if errnoRet != nil {
			return uint32(*errnoRet) & unix.SECCOMP_RET_DATA
		}
		return uint32(def)
	}
	switch a {
	case specs.ActKill, specs.ActKillThread:
		return unix.SECCOMP_RET_KILL_THREAD, nil
	case specs.ActKillProcess:
		return unix.SECCOMP_RET_KILL_PROCESS, nil
	case specs.ActTrap:
		return unix.SECCOMP_RET_TRAP, nil
	case specs.ActErrno:
		return unix.SECCOMP_RET_ERRNO | data(uint(unix.EPERM)), nil
	case specs.ActTrace:
		return unix.SECCOMP_RET_TRACE | data(uint(unix.ENOSYS)), nil
	case specs.ActLog:
		return unix.SECCOMP_RET_LOG, nil
	case specs.ActAllow:
		return unix.SECCOMP_RET_ALLOW, nil
	case specs.ActNotify:
		return 0, errors.New("seccomp: SCMP_ACT_NOTIFY (a user-space supervisor) is not supported")
	}
	return 0, fmt.Errorf("seccomp: unknown action %q", a)
}

type rule struct {
	action specs.LinuxSeccompAction
	ret    uint32
	args   []specs.LinuxSeccompArg
}

// Compile checks p and compiles it.
func Compile(p *specs.LinuxSeccomp) (*Filter, error) {
	if p.ListenerPath != "" || len(p.ListenerMetadata) > 0 {
		return nil, errors.New("seccomp: a listener (SCMP_ACT_NOTIFY) is not supported")
	}
	f := &Filter{}
	for _, fl := range p.Flags {
		switch fl {
		case specs.LinuxSeccompFlagLog:
			f.flags |= unix.SECCOMP_FILTER_FLAG_LOG
		case specs.LinuxSeccompFlagSpecAllow:
			f.flags |= unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW
		case "SECCOMP_FILTER_FLAG_TSYNC":
			f.flags |= unix.SECCOMP_FILTER_FLAG_TSYNC
		default:
			return nil, fmt.Errorf("seccomp: flag %q is not supported", fl)
		}
	}
	if len(p.Architectures) > 0 && !slices.Contains(p.Architectures, specs.Arch(nativeName)) {
		return nil, fmt.Errorf("seccomp: the profile's architectures %v leave out this machine's (%s)", p.Architectures, nativeName)
	}
	def, err := ret(p.DefaultAction, p.DefaultErrnoRet)
	if err != nil {
		return nil, fmt.Errorf("seccomp: default action: %w", err)
	}
	foreign := def // a call through an ABI without a table
	if p.DefaultAction == specs.ActAllow || p.DefaultAction == specs.ActLog {
		foreign = unix.SECCOMP_RET_KILL_PROCESS
	}
	byNr := map[uint32][]rule{}
	var order []uint32
	for i, s := range p.Syscalls {
		r, err := ret(s.Action, s.ErrnoRet)
		if err != nil {
			return nil, fmt.Errorf("seccomp: syscalls[%d]: %w", i, err)
		}
		for _, a := range s.Args {
			if a.Index > 5 {
				return nil, fmt.Errorf("seccomp: syscalls[%d]: argument index %d (a call has 6)", i, a.Index)
			}
			switch a.Op {
			case specs.OpNotEqual, specs.OpLessThan, specs.OpLessEqual, specs.OpEqualTo, specs.OpGreaterEqual, specs.OpGreaterThan, specs.OpMaskedEqual:
			default:
				return nil, fmt.Errorf("seccomp: syscalls[%d]: unknown operator %q", i, a.Op)
			}
		}
		if r == def && len(s.Args) == 0 {
			continue // what happens anyway
		}
		for _, name := range s.Names {
			nr, ok := Number(name)
			if !ok {
				f.Skipped = append(f.Skipped, name)
				continue
			}
			if _, seen := byNr[nr]; !seen {
				order = append(order, nr)
			}
			byNr[nr] = append(byNr[nr], rule{s.Action, r, s.Args})
		}
	}
	var b asm
	const (
		offNr   = 0
		offArch = 4
		offArgs = 16
	)
	b.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offArch)
	nativeL := b.newLabel()
	foreignL := b.newLabel()
	b.jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, auditArch, nativeL, foreignL)
	b.mark(foreignL)
	b.stmt(unix.BPF_RET|unix.BPF_K, foreign)
	b.mark(nativeL)
	b.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offNr)
	if x32Bit != 0 {
		x32, ok := b.newLabel(), b.newLabel()
		b.jump(unix.BPF_JMP|unix.BPF_JGE|unix.BPF_K, x32Bit, x32, ok)
		b.mark(x32)
		b.stmt(unix.BPF_RET|unix.BPF_K, foreign)
		b.mark(ok)
	}
	// The dispatch chain; conditional rules' blocks come after it.
	type block struct {
		label int
		rules []rule
	}
	var blocks []block
	for _, nr := range order {
		rules := byNr[nr]
		slices.SortStableFunc(rules, func(a, b rule) int {
			return slices.Index(precedence, a.action) - slices.Index(precedence, b.action)
		})
		next := b.newLabel()
		match := b.newLabel()
		b.jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, nr, match, next)
		b.mark(match)
		if len(rules[0].args) == 0 {
			b.stmt(unix.BPF_RET|unix.BPF_K, rules[0].ret) // the strongest applies whatever the arguments
		} else {
			l := b.newLabel()
			b.ja(l)
			blocks = append(blocks, block{l, rules})
		}
		b.mark(next)
	}
	b.stmt(unix.BPF_RET|unix.BPF_K, def)
	for _, bl := range blocks {
		b.mark(bl.label)
		for _, r := range bl.rules {
			fail := b.newLabel()
			for _, a := range r.args {
				b.cond(offArgs+8*int(a.Index), a, fail)
			}
			b.stmt(unix.BPF_RET|unix.BPF_K, r.ret)
			b.mark(fail)
		}
		b.stmt(unix.BPF_RET|unix.BPF_K, def)
	}
	prog, err := b.assemble()
	if err != nil {
		return nil, err
	}
	if len(prog) > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("seccomp: the profile compiles to %d instructions, more than the kernel's %d", len(prog), unix.BPF_MAXINSNS)
	}
	f.prog = prog
	return f, nil
}

// cond emits a comparison of the 64-bit argument at off that falls
// through when it holds and jumps to fail when it does not. The low half
// is at off, the high half at off+4 (little-endian).
func (b *asm) cond(off int, a specs.LinuxSeccompArg, fail int) {
	hi, lo := uint32(a.Value>>32), uint32(a.Value)
	ldHi := func() { b.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, uint32(off+4)) }
	ldLo := func() { b.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, uint32(off)) }
	j := func(op uint16, k uint32, t, f int) { b.jump(unix.BPF_JMP|op|unix.BPF_K, k, t, f) }
	ok := b.newLabel()
	const next = -1
	switch a.Op {
	case specs.OpEqualTo:
		ldHi()
		j(unix.BPF_JEQ, hi, next, fail)
		ldLo()
		j(unix.BPF_JEQ, lo, next, fail)
	case specs.OpNotEqual:
		ldHi()
		j(unix.BPF_JEQ, hi, next, ok)
		ldLo()
		j(unix.BPF_JEQ, lo, fail, next)
	case specs.OpMaskedEqual: // (arg & Value) == ValueTwo
		ldHi()
		b.stmt(unix.BPF_ALU|unix.BPF_AND|unix.BPF_K, hi)
		j(unix.BPF_JEQ, uint32(a.ValueTwo>>32), next, fail)
		ldLo()
		b.stmt(unix.BPF_ALU|unix.BPF_AND|unix.BPF_K, lo)
		j(unix.BPF_JEQ, uint32(a.ValueTwo), next, fail)
	case specs.OpGreaterThan, specs.OpGreaterEqual:
		ldHi()
		j(unix.BPF_JGT, hi, ok, next)
		j(unix.BPF_JEQ, hi, next, fail)
		ldLo()
		op := uint16(unix.BPF_JGT)
		if a.Op == specs.OpGreaterEqual {
			op = unix.BPF_JGE
		}
		j(op, lo, ok, fail)
	case specs.OpLessThan, specs.OpLessEqual: // not ≥, not >
		ldHi()
		j(unix.BPF_JGT, hi, fail, next)
		j(unix.BPF_JEQ, hi, next, ok)
		ldLo()
		op := uint16(unix.BPF_JGE)
		if a.Op == specs.OpLessEqual {
			op = unix.BPF_JGT
		}
		j(op, lo, fail, ok)
	}
	b.mark(ok)
}

// asm assembles classic BPF with labels: conditional jumps must land
// within 255 instructions, ja anywhere ahead.
type asm struct {
	ins    []insn
	labels []int // label → instruction index
}

type insn struct {
	f      unix.SockFilter
	jt, jf int // labels, -1 for the next instruction
	ja     int // label of an unconditional jump, -1 if none
}

func (b *asm) newLabel() int { b.labels = append(b.labels, -1); return len(b.labels) - 1 }

func (b *asm) mark(l int) { b.labels[l] = len(b.ins) }

func (b *asm) stmt(code uint16, k uint32) {
	b.ins = append(b.ins, insn{f: unix.SockFilter{Code: code, K: k}, jt: -1, jf: -1, ja: -1})
}

func (b *asm) jump(code uint16, k uint32, t, f int) {
	b.ins = append(b.ins, insn{f: unix.SockFilter{Code: code, K: k}, jt: t, jf: f, ja: -1})
}

func (b *asm) ja(l int) {
	b.ins = append(b.ins, insn{f: unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JA}, jt: -1, jf: -1, ja: l})
}

func (b *asm) assemble() ([]unix.SockFilter, error) {
	out := make([]unix.SockFilter, len(b.ins))
	off := func(i, l int) (int, error) {
		if l < 0 {
			return 0, nil
		}
		t := b.labels[l]
		if t <= i {
			return 0, fmt.Errorf("seccomp: internal: a jump at %d goes back to %d", i, t)
		}
		return t - i - 1, nil
	}
	for i, in := range b.ins {
		f := in.f
		if in.ja >= 0 {
			d, err := off(i, in.ja)
			if err != nil {
				return nil, err
			}
			f.K = uint32(d)
		} else if f.Code&0x07 == unix.BPF_JMP && f.Code&0xf0 != unix.BPF_JA {
			t, err := off(i, in.jt)
			if err != nil {
				return nil, err
			}
			fl, err := off(i, in.jf)
			if err != nil {
				return nil, err
			}
			if t > 255 || fl > 255 {
				return nil, fmt.Errorf("seccomp: internal: a conditional jump at %d spans more than 255 instructions", i)
			}
			f.Jt, f.Jf = uint8(t), uint8(fl)
		}
		out[i] = f
	}
	return out, nil
}
