//go:build linux && (amd64 || arm64)

package seccomp

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// denied are the system calls the default profile refuses (EPERM): they
// reach across the container's boundary — the kernel's modules, keys,
// clock, swap and reboot, other namespaces and mounts, other processes'
// memory, the BPF and perf subsystems — as Docker's default profile
// refuses them to a container without extra capabilities.
var denied = map[string]bool{
	"acct": true, "add_key": true, "bpf": true, "clock_adjtime": true, "clock_settime": true,
	"create_module": true, "delete_module": true, "finit_module": true, "fsconfig": true, "fsmount": true,
	"fsopen": true, "fspick": true, "get_kernel_syms": true, "get_mempolicy": true, "init_module": true,
	"ioperm": true, "iopl": true, "kcmp": true, "kexec_file_load": true, "kexec_load": true, "keyctl": true,
	"lookup_dcookie": true, "mbind": true, "mount": true, "mount_setattr": true, "move_mount": true,
	"move_pages": true, "name_to_handle_at": true, "nfsservctl": true, "open_by_handle_at": true,
	"open_tree": true, "perf_event_open": true, "pivot_root": true, "process_vm_readv": true,
	"process_vm_writev": true, "query_module": true, "quotactl": true, "quotactl_fd": true, "reboot": true,
	"request_key": true, "set_mempolicy": true, "setns": true, "settimeofday": true, "stime": true,
	"swapoff": true, "swapon": true, "_sysctl": true, "sysfs": true, "syslog": true, "umount": true,
	"umount2": true, "unshare": true, "uselib": true, "userfaultfd": true, "ustat": true, "vhangup": true,
	"vm86": true, "vm86old": true, "personality": true, "clone": true, "clone3": true,
	"socket": true,
}

// Default returns the default profile: every system call this machine's
// table knows is allowed except those that reach outside the container;
// anything else — the refused ones and calls newer than the table — fails
// with EPERM. Three are allowed on conditions, as Docker's profile does:
// clone without namespace flags, socket of any family but AF_VSOCK
// (the host's), personality to the harmless personas; clone3 fails with
// ENOSYS so the C library falls back to clone, whose flags can be checked.
func Default() *specs.LinuxSeccomp {
	eperm, enosys := uint(unix.EPERM), uint(unix.ENOSYS)
	var allowed []string
	for _, s := range syscalls {
		if !denied[s.name] {
			allowed = append(allowed, s.name)
		}
	}
	const nsFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
		unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP
	p := &specs.LinuxSeccomp{
		DefaultAction:   specs.ActErrno,
		DefaultErrnoRet: &eperm,
		Architectures:   []specs.Arch{nativeName},
		Syscalls: []specs.LinuxSyscall{
			{Names: allowed, Action: specs.ActAllow},
			{Names: []string{"clone"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Value: nsFlags, ValueTwo: 0, Op: specs.OpMaskedEqual}}},
			{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys},
			{Names: []string{"socket"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Value: unix.AF_VSOCK, Op: specs.OpNotEqual}}},
		},
	}
	for _, persona := range []uint64{0x0, 0x8, 0x20000, 0x20008, 0xffffffff} {
		p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{Names: []string{"personality"}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: persona, Op: specs.OpEqualTo}}})
	}
	return p
}
