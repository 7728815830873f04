package container

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/tangram-dev/tangram/container/seccomp"
)

// The container's init is this binary run again (/proc/self/exe) with
// initEnv set, in the namespaces the parent asked clone for. It reads its
// orders from fd 3, sets the container up, reports, waits on the exec
// FIFO (fd 4) until start, and execs the container's process — which then
// is PID 1 of the container. A package init function catches it before
// main runs, as runc's nsenter does, so every program that links this
// package (the tangram binary, its tests) can serve as the init.
const (
	initEnv  = "_TANGRAM_CONTAINER_INIT"
	initPipe = 3
	initFIFO = 4
)

// initOrder is what the parent sends the init.
type initOrder struct {
	Spec *specs.Spec `json:"spec"`
	// BindDevices binds the host's device nodes instead of mknod
	// (inside a user namespace, mknod is refused).
	BindDevices bool `json:"bind_devices,omitempty"`
	// CgroupNS asks the init to unshare its cgroup namespace once the
	// parent has placed it in its group (v1 cannot clone into a group).
	CgroupNS bool `json:"cgroup_ns,omitempty"`
}

// decodeOrder reads the parent's orders, the spec by the fast decoder
// where it can (see decodeSpec).
func decodeOrder(b []byte) (initOrder, error) {
	d := &specDecoder{b: b}
	var o initOrder
	d.object(true, func(k string) bool {
		switch k {
		case "spec":
			o.Spec = d.spec()
		case "bind_devices":
			o.BindDevices = d.boolean()
		case "cgroup_ns":
			o.CgroupNS = d.boolean()
		default:
			return false
		}
		return true
	})
	if d.space(); !d.bad && d.i == len(d.b) {
		return o, nil
	}
	o = initOrder{}
	err := json.Unmarshal(b, &o)
	return o, err
}

// initReply is what the init answers: ready, or the error that stopped it.
type initReply struct {
	Ready bool   `json:"ready,omitempty"`
	Error string `json:"error,omitempty"`
}

func init() {
	if os.Getenv(initEnv) == "" {
		return
	}
	// Capabilities, no_new_privs and the exec belong to one thread; the
	// main goroutine stays on the main thread for all of them.
	runtime.LockOSThread()
	pipe := os.NewFile(initPipe, "init-pipe")
	err := initContainer(pipe)
	// Reaching here means the exec did not happen.
	if err == nil {
		err = errors.New("container: init returned without exec")
	}
	b, _ := json.Marshal(initReply{Error: err.Error()})
	pipe.Write(append(b, '\n'))
	os.Exit(127)
}

func initContainer(pipe *os.File) error {
	os.Unsetenv(initEnv)
	var order initOrder
	r := bufio.NewReader(pipe)
	line, err := r.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("container: init: read orders: %w", err)
	}
	if order, err = decodeOrder(line); err != nil {
		return fmt.Errorf("container: init: decode orders: %w", err)
	}
	s := order.Spec
	if s == nil || s.Process == nil || s.Root == nil || s.Linux == nil {
		return errors.New("container: init: incomplete orders")
	}
	has := func(t specs.LinuxNamespaceType) bool {
		return slices.ContainsFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == t })
	}
	if order.CgroupNS {
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			return fmt.Errorf("container: unshare cgroup namespace: %w", err)
		}
	}
	if _, err := unix.Setsid(); err != nil {
		return fmt.Errorf("container: setsid: %w", err)
	}
	rootfs := s.Root.Path
	if has(specs.MountNamespace) {
		if err := setupRootfs(s, rootfs, order.BindDevices, has(specs.NetworkNamespace)); err != nil {
			return err
		}
	} else if err := unix.Chroot(rootfs); err != nil {
		return fmt.Errorf("container: chroot (no mount namespace): %w", err)
	}
	if err := setNames(s, has(specs.UTSNamespace), has(specs.NetworkNamespace)); err != nil {
		return err
	}
	if err := protect(s, has(specs.MountNamespace)); err != nil {
		return err
	}
	p := s.Process
	for _, rl := range p.Rlimits {
		res, ok := rlimitNames[rl.Type]
		if !ok {
			return fmt.Errorf("container: unknown rlimit %q", rl.Type)
		}
		if err := unix.Setrlimit(res, &unix.Rlimit{Cur: rl.Soft, Max: rl.Hard}); err != nil {
			return fmt.Errorf("container: set %s: %w", rl.Type, err)
		}
	}
	if p.OOMScoreAdj != nil {
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte(fmt.Sprint(*p.OOMScoreAdj)), 0); err != nil {
			return fmt.Errorf("container: oom_score_adj: %w", err)
		}
	}
	path, err := lookPath(p.Args[0], p.Env)
	if err != nil {
		return err
	}
	if p.Terminal {
		if err := setupConsole(pipe, p); err != nil {
			return err
		}
	}
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	var filter *seccomp.Filter
	if s.Linux.Seccomp != nil {
		if filter, err = seccomp.Compile(s.Linux.Seccomp); err != nil {
			return err
		}
		if !p.NoNewPrivileges {
			// Without no_new_privs a filter takes CAP_SYS_ADMIN to
			// install: now, before the capabilities go (as runc does);
			// what the init does from here on passes through it.
			if err := filter.Install(); err != nil {
				return err
			}
			filter = nil
		}
	}
	if err := finishProcess(p); err != nil {
		return err
	}
	if err := unix.Chdir(cwd); err != nil {
		return fmt.Errorf("container: chdir %s: %w", cwd, err)
	}
	if b, err := json.Marshal(initReply{Ready: true}); err == nil {
		if _, err := pipe.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("container: init: report ready: %w", err)
		}
	}
	// Wait for start: the open blocks until `start` opens the FIFO to read.
	fifo, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", initFIFO), os.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("container: open exec fifo (is /proc mounted in the container?): %w", err)
	}
	if _, err := fifo.Write([]byte{'0'}); err != nil {
		return fmt.Errorf("container: exec fifo: %w", err)
	}
	fifo.Close()
	unix.Close(initFIFO)
	pipe.Close()
	if filter != nil {
		// As close to the exec as can be: the fewer calls the init
		// makes under the filter, the fewer a profile must allow.
		if err := filter.Install(); err != nil {
			return err
		}
	}
	if err := unix.Exec(path, p.Args, p.Env); err != nil {
		return fmt.Errorf("container: exec %s: %w", p.Args[0], err)
	}
	return nil
}

// setupRootfs mounts the container's filesystems below rootfs and makes it
// the root.
func setupRootfs(s *specs.Spec, rootfs string, bindDevices, newNetNS bool) error {
	prop := uintptr(unix.MS_SLAVE | unix.MS_REC)
	if p, ok := propagationFlags[s.Linux.RootfsPropagation]; ok {
		prop = p
	}
	if err := unix.Mount("", "/", "", prop, ""); err != nil {
		return fmt.Errorf("container: set root propagation: %w", err)
	}
	if err := unix.Mount(rootfs, rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("container: bind rootfs: %w", err)
	}
	devTmpfs := false
	for _, m := range s.Mounts {
		if err := mountOne(rootfs, m, newNetNS); err != nil {
			return err
		}
		if filepath.Clean(m.Destination) == "/dev" && m.Type == "tmpfs" {
			devTmpfs = true
		}
	}
	if devTmpfs {
		if err := createDevices(rootfs, s.Linux.Devices, bindDevices); err != nil {
			return err
		}
	}
	return pivotRoot(rootfs)
}

// finishProcess switches to the process's user and capabilities: groups,
// gid, uid with capabilities kept across the uid change, the bounding set,
// the capability sets, then no_new_privs.
func finishProcess(p *specs.Process) error {
	var bounding uint64 = ^uint64(0)
	if p.Capabilities != nil {
		b, err := capSet(p.Capabilities.Bounding)
		if err != nil {
			return err
		}
		bounding = b
	}
	if err := dropBounding(bounding); err != nil {
		return err
	}
	u := p.User
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("container: keep capabilities: %w", err)
	}
	groups := make([]int, 0, len(u.AdditionalGids))
	for _, g := range u.AdditionalGids {
		groups = append(groups, int(g))
	}
	if err := unix.Setgroups(groups); err != nil && !(errors.Is(err, unix.EPERM) && len(groups) == 0) {
		return fmt.Errorf("container: setgroups: %w", err)
	}
	// The raw system calls: they change this thread only. Go's (and
	// glibc's, with cgo) change every thread of the process, which would
	// turn the whole runtime into the container's user when it prepares
	// a container or an exec on one of its threads.
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(u.GID), uintptr(u.GID), uintptr(u.GID)); e != 0 {
		return fmt.Errorf("container: setgid %d: %w", u.GID, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(u.UID), uintptr(u.UID), uintptr(u.UID)); e != 0 {
		return fmt.Errorf("container: setuid %d: %w", u.UID, e)
	}
	if p.Capabilities != nil {
		if err := applyCaps(p.Capabilities); err != nil {
			return err
		}
	}
	if p.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("container: no_new_privs: %w", err)
		}
	}
	return nil
}

// lookPath finds name on the PATH of the container's environment, in the
// container's root.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		if _, err := os.Stat(name); err != nil {
			return "", fmt.Errorf("container: process %s: %w", name, err)
		}
		return name, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("container: process %q: not found on PATH %s in the container", name, path)
}

// loopbackUp brings up lo in the container's new network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("container: loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("container: loopback: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("container: loopback flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("container: loopback up: %w", err)
	}
	return nil
}

// setupConsole makes a pseudo-terminal in the container's own /dev/pts,
// hands its master to the parent over the init socket (SCM_RIGHTS), waits
// for the parent's acknowledgement, and makes the slave the process's
// standard streams and controlling terminal.
func setupConsole(pipe *os.File, p *specs.Process) error {
	master, slave, err := openPty(p)
	if err != nil {
		return err
	}
	defer unix.Close(master)
	msg := []byte(`{"console":true}` + "\n")
	if err := unix.Sendmsg(int(pipe.Fd()), msg, unix.UnixRights(master), nil, 0); err != nil {
		return fmt.Errorf("container: send console: %w", err)
	}
	ack := make([]byte, 1)
	if _, err := pipe.Read(ack); err != nil {
		return fmt.Errorf("container: console acknowledgement: %w", err)
	}
	for fd := 0; fd < 3; fd++ {
		if err := unix.Dup2(slave, fd); err != nil {
			return fmt.Errorf("container: pty as fd %d: %w", fd, err)
		}
		if fd == slave {
			// dup2 onto itself keeps close-on-exec: clear it.
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
				return fmt.Errorf("container: pty as fd %d: %w", fd, err)
			}
		}
	}
	if slave > 2 {
		unix.Close(slave)
	}
	if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
		return fmt.Errorf("container: controlling terminal: %w", err)
	}
	return nil
}

// openPty opens a pseudo-terminal from the /dev/ptmx the calling thread
// sees (the container's own devpts once its root is in place), its slave
// owned by the process's user and sized as the spec asks.
func openPty(p *specs.Process) (master, slave int, err error) {
	master, err = unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, -1, fmt.Errorf("container: open /dev/ptmx: %w", err)
	}
	fail := func(err error) (int, int, error) {
		unix.Close(master)
		if slave >= 0 {
			unix.Close(slave)
		}
		return -1, -1, err
	}
	slave = -1
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		return fail(fmt.Errorf("container: unlock pty: %w", err))
	}
	n, err := unix.IoctlGetInt(master, unix.TIOCGPTN)
	if err != nil {
		return fail(fmt.Errorf("container: pty number: %w", err))
	}
	slave, err = unix.Open(fmt.Sprintf("/dev/pts/%d", n), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(fmt.Errorf("container: open pty: %w", err))
	}
	if err := unix.Fchown(slave, int(p.User.UID), int(p.User.GID)); err != nil {
		return fail(fmt.Errorf("container: chown pty: %w", err))
	}
	if p.ConsoleSize != nil {
		unix.IoctlSetWinsize(slave, unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(p.ConsoleSize.Height), Col: uint16(p.ConsoleSize.Width)})
	}
	return master, slave, nil
}

// setNames sets the host and domain names (in a UTS namespace of the
// container's own) and brings up loopback (in a network namespace of its
// own), on the calling thread's namespaces.
func setNames(s *specs.Spec, uts, net bool) error {
	if uts && s.Hostname != "" {
		if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
			return fmt.Errorf("container: set hostname: %w", err)
		}
	}
	if uts && s.Domainname != "" {
		if err := unix.Setdomainname([]byte(s.Domainname)); err != nil {
			return fmt.Errorf("container: set domain name: %w", err)
		}
	}
	if net {
		return loopbackUp()
	}
	return nil
}

// protect writes the sysctls, then (with a mount namespace of the
// container's own, /proc mounted) makes the read-only paths read-only,
// masks the masked ones and the root read-only when asked.
func protect(s *specs.Spec, mounts bool) error {
	for k, v := range s.Linux.Sysctl {
		p := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
		if err := os.WriteFile(p, []byte(v), 0); err != nil {
			return fmt.Errorf("container: sysctl %s=%s: %w", k, v, err)
		}
	}
	if !mounts {
		return nil
	}
	for _, p := range s.Linux.ReadonlyPaths {
		if err := readonlyPath(p); err != nil {
			return err
		}
	}
	for _, p := range s.Linux.MaskedPaths {
		if err := maskPath(p); err != nil {
			return err
		}
	}
	if s.Root.Readonly {
		if err := unix.Mount("", "/", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("container: read-only root: %w", err)
		}
	}
	return nil
}
