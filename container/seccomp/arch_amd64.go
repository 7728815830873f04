//go:build linux && amd64

package seccomp

import "golang.org/x/sys/unix"

const (
	auditArch  = unix.AUDIT_ARCH_X86_64
	nativeName = "SCMP_ARCH_X86_64"
	// x32 system calls come with the x86-64 audit arch and this bit set
	// in their number; they have no table here.
	x32Bit = 0x40000000
)
