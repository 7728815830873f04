//go:build linux && arm64

package seccomp

import "golang.org/x/sys/unix"

const (
	auditArch  = unix.AUDIT_ARCH_AARCH64
	nativeName = "SCMP_ARCH_AARCH64"
	x32Bit     = 0 // no such ABI
)
