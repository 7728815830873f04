package container

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/tangram-dev/tangram/container/cgroup"
)

// A container that is created and started at once (Run, Launch) needs no
// init process: this process prepares the namespaces on one OS thread of
// its own and forks the container's process from it.
//
// Namespaces (but the user namespace), root directory, credentials and
// capabilities belong to a thread, and a child inherits the thread that
// forked it. The preparing thread T unshares its filesystem context and
// the mount, UTS, IPC, network and PID-for-children namespaces, mounts the
// container's filesystems, pivots into the root, sets host name and
// loopback, switches to the process's user and capabilities, and forks
// the program under ptrace, so that it stops at its exec before running
// an instruction. /proc must show the new PID namespace, which has no
// process until that fork: a second, privileged thread T2 in T's mount and
// network namespaces then mounts /proc with procfs's pidns option (new in
// Linux 6.15; probed once), masks and write-protects paths, writes
// sysctls and sets the rlimits (they are per process, so they are set on
// the child), and T lets the program go (PTRACE_DETACH). Both threads end
// with their goroutines, never returned to Go's scheduler.
//
// This saves the start of a whole second program per container. Where it
// cannot be used (a user namespace, a terminal, a bridge network, an older
// kernel, Config.InitProcess) the init process does the same work.

// directLaunches counts containers launched without an init (for tests).
var directLaunches atomic.Int64

var procPidnsOnce = sync.OnceValue(func() bool {
	fs, err := unix.Fsopen("proc", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return false
	}
	defer unix.Close(fs)
	ns, err := unix.Open("/proc/self/ns/pid", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(ns)
	return unix.FsconfigSetFd(fs, "pidns", ns) == nil
})

// direct reports whether spec can be run without an init process.
func (r *Runtime) direct(spec *specs.Spec, userNS, cgroupNS bool) bool {
	// A seccomp filter can only be installed by the process itself, before
	// its exec: the init does that.
	if r.cfg.InitProcess || userNS || cgroupNS || spec.Process.Terminal || spec.Annotations[AnnotationNetwork] != "" || spec.Linux.Seccomp != nil {
		return false
	}
	// Rlimits are set on the stopped program from another thread: allowed
	// for a program of the same user (root), not for one that already is
	// another user without CAP_SYS_RESOURCE.
	if spec.Process.User.UID != 0 && len(spec.Process.Rlimits) > 0 {
		return false
	}
	has := func(t specs.LinuxNamespaceType) bool {
		return slices.ContainsFunc(spec.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == t })
	}
	if !has(specs.PIDNamespace) || !has(specs.MountNamespace) {
		return false
	}
	procs := 0
	for _, m := range spec.Mounts {
		if m.Type == "proc" {
			procs++
			if filepath.Clean(m.Destination) != "/proc" {
				return false
			}
		}
	}
	return procs == 1 && procPidnsOnce() && !traced()
}

// traced reports whether a debugger or strace traces this process: its
// children are then traced too, and cannot be stopped at their exec by
// this process.
func traced() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return true
	}
	_, rest, ok := strings.Cut(string(b), "\nTracerPid:\t")
	return !ok || !strings.HasPrefix(rest, "0\n")
}

// onThread runs f on a locked OS thread that is not the main thread and
// is never given back: the thread ends when f returns.
func onThread(f func()) {
	var enter func()
	enter = func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// The main thread: /proc/self is its view, and Go never ends
			// it. Keep it locked (so no other goroutine gets it) while a
			// goroutine on another thread does the work.
			done := make(chan struct{})
			go func() { defer close(done); enter() }()
			<-done
			runtime.UnlockOSThread()
			return
		}
		f()
	}
	go enter()
}

// launchDirect creates and starts a container without an init process.
func (r *Runtime) launchDirect(ctx context.Context, id, bundle string, spec *specs.Spec, flags uintptr, opts CreateOptions) (_ *Process, err error) {
	dir, err := r.makeDir(id)
	if err != nil {
		return nil, err
	}
	// Threads T and T2 are started first: making a thread then overlaps
	// the cgroup's and the state's set-up instead of adding to it.
	startT := make(chan func(), 1)
	defer close(startT) // with no work sent, T just ends
	onThread(func() {
		if f := <-startT; f != nil {
			f()
		}
	})
	t2 := newHelper()
	defer t2.stop()
	var group *cgroup.Group
	var proc *child
	defer func() {
		if err == nil {
			return
		}
		if proc != nil {
			proc.Kill()
			proc.Wait()
		}
		if group != nil {
			if derr := group.Destroy(); derr != nil {
				r.log.Warn("container: cleaning up a failed create", "id", id, "err", derr)
			}
		}
		os.RemoveAll(dir)
	}()
	group, cgPath, err := makeGroup(id, spec)
	if err != nil {
		return nil, err
	}
	st := &State{
		OCIVersion: specs.Version, ID: id, Status: Creating, Bundle: bundle,
		Annotations: spec.Annotations, Rootfs: spec.Root.Path, Cgroup: cgPath, Created: time.Now().UTC(),
	}
	if err := writeState(dir, st); err != nil {
		return nil, err
	}
	files, copies, closeAfter, err := stdio(opts.Stdin, opts.Stdout, opts.Stderr)
	if err != nil {
		return nil, err
	}
	fds := make([]uintptr, len(files))
	for i, f := range files {
		fds[i] = f.Fd()
	}
	cgFD, closeCg, err := group.FD()
	if err != nil {
		closeAfter()
		copies.stop()
		return nil, err
	}
	defer closeCg()

	type result struct {
		pid, pidfd int
		err        error
	}
	res := make(chan result, 1)
	startT <- func() {
		pidfd := -1
		pid, err := prepareAndFork(spec, flags, group, cgFD, fds, t2, &pidfd)
		if err != nil && pidfd >= 0 {
			unix.Close(pidfd)
			pidfd = -1
		}
		res <- result{pid, pidfd, err}
	}
	out := <-res
	closeAfter()
	if out.err != nil {
		copies.stop()
		return nil, out.err
	}
	proc = newChild(out.pid, out.pidfd)
	start, _, ok := procStart(out.pid)
	if !ok {
		// It ran and exited already; its start time is gone with it.
		start = 0
	}
	directLaunches.Add(1)
	st.Pid, st.InitStart, st.Status = out.pid, start, Running
	if err := writeState(dir, st); err != nil {
		copies.stop()
		return nil, err
	}
	return &Process{ID: id, Pid: out.pid, proc: proc, copies: copies, r: r}, nil
}

// prepareAndFork runs on thread T (see the comment at the top).
//
// The program's pidfd is stored in *pidfd (-1 if the kernel gives none).
func prepareAndFork(spec *specs.Spec, flags uintptr, group *cgroup.Group, cgFD int, fds []uintptr, t2 *helper, pidfd *int) (int, error) {
	hostProc, err := unix.Open("/proc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("container: open /proc: %w", err)
	}
	defer unix.Close(hostProc)
	tid := unix.Gettid()
	var restore func() error
	if cgFD < 0 && group != nil {
		if restore, err = group.AddSelf(); err != nil {
			return 0, err
		}
	}
	unshare := flags&^unix.CLONE_NEWUSER | unix.CLONE_FS
	if err := unix.Unshare(int(unshare)); err != nil {
		if restore != nil {
			restore()
		}
		return 0, fmt.Errorf("container: unshare namespaces: %w", err)
	}
	pid, err := func() (int, error) {
		// T2 joins T's mount and network namespaces now, while /proc
		// still shows the host: it does what needs privileges after the
		// fork.
		if err := t2.join(hostProc, tid, flags&unix.CLONE_NEWNET != 0); err != nil {
			return 0, err
		}
		s := spec
		withoutProc := *s
		withoutProc.Mounts = slices.DeleteFunc(slices.Clone(s.Mounts), func(m specs.Mount) bool { return m.Type == "proc" })
		if err := setupRootfs(&withoutProc, s.Root.Path, false, flags&unix.CLONE_NEWNET != 0); err != nil {
			return 0, err
		}
		if err := setNames(s, flags&unix.CLONE_NEWUTS != 0, flags&unix.CLONE_NEWNET != 0); err != nil {
			return 0, err
		}
		p := s.Process
		path, err := lookPath(p.Args[0], p.Env)
		if err != nil {
			return 0, err
		}
		cwd := p.Cwd
		if cwd == "" {
			cwd = "/"
		}
		if err := unix.Chdir(cwd); err != nil {
			return 0, fmt.Errorf("container: chdir %s: %w", cwd, err)
		}
		if err := finishProcess(p); err != nil {
			return 0, err
		}
		attr := &syscall.SysProcAttr{Setsid: true, Ptrace: true, PidFD: pidfd}
		if cgFD >= 0 {
			attr.UseCgroupFD, attr.CgroupFD = true, cgFD
		}
		pid, err := syscall.ForkExec(path, p.Args, &syscall.ProcAttr{Env: p.Env, Files: fds, Sys: attr})
		if err != nil {
			return 0, fmt.Errorf("container: exec %s: %w", p.Args[0], err)
		}
		var ws unix.WaitStatus
		if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil || !ws.Stopped() {
			unix.Kill(pid, unix.SIGKILL)
			return 0, fmt.Errorf("container: %s did not stop at its exec (%v)", p.Args[0], err)
		}
		return pid, nil
	}()
	if restore != nil {
		// T leaves the group it joined (it must be T itself: see
		// cgroup.Group.AddSelf); the program was born in it.
		if rerr := restore(); rerr != nil && err == nil {
			unix.Kill(pid, unix.SIGKILL)
			unix.PtraceDetach(pid)
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WALL, nil)
			return 0, rerr
		}
	}
	if err != nil {
		return 0, err
	}
	fail := func(err error) (int, error) {
		unix.Kill(pid, unix.SIGKILL)
		unix.PtraceDetach(pid)
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, unix.WALL, nil)
		return 0, err
	}
	if err := t2.run(func() error { return finishRootfs(spec, hostProc, pid) }); err != nil {
		return fail(err)
	}
	if err := unix.PtraceDetach(pid); err != nil {
		return fail(fmt.Errorf("container: let %s run: %w", spec.Process.Args[0], err))
	}
	return pid, nil
}

// finishRootfs runs on T2 with the container's process stopped at its
// exec: /proc for its PID namespace, the masked and read-only paths, a
// read-only root, sysctls and rlimits.
func finishRootfs(s *specs.Spec, hostProc, pid int) error {
	for _, m := range s.Mounts {
		if m.Type != "proc" {
			continue
		}
		if err := mountProc(m, hostProc, pid); err != nil {
			return err
		}
	}
	if err := protect(s, true); err != nil {
		return err
	}
	for _, rl := range s.Process.Rlimits {
		lim := unix.Rlimit{Cur: rl.Soft, Max: rl.Hard}
		if err := unix.Prlimit(pid, rlimitNames[rl.Type], &lim, nil); err != nil {
			return fmt.Errorf("container: set %s: %w", rl.Type, err)
		}
	}
	if s.Process.OOMScoreAdj != nil {
		p := fmt.Sprintf("%d/oom_score_adj", pid)
		fd, err := unix.Openat(hostProc, p, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("container: oom_score_adj: %w", err)
		}
		_, err = unix.Write(fd, []byte(fmt.Sprint(*s.Process.OOMScoreAdj)))
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("container: oom_score_adj: %w", err)
		}
	}
	return nil
}

// mountProc mounts procfs for pid's PID namespace at m.Destination with
// the new mount API (fsopen, fsconfig pidns=, fsmount, move_mount).
func mountProc(m specs.Mount, hostProc, pid int) error {
	ns, err := unix.Openat(hostProc, fmt.Sprintf("%d/ns/pid", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("container: the process's PID namespace: %w", err)
	}
	defer unix.Close(ns)
	fs, err := unix.Fsopen("proc", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("container: fsopen proc: %w", err)
	}
	defer unix.Close(fs)
	if err := unix.FsconfigSetFd(fs, "pidns", ns); err != nil {
		return fmt.Errorf("container: proc pidns: %w", err)
	}
	if m.Source != "" {
		if err := unix.FsconfigSetString(fs, "source", m.Source); err != nil {
			return fmt.Errorf("container: proc source: %w", err)
		}
	}
	if err := unix.FsconfigCreate(fs); err != nil {
		return fmt.Errorf("container: create proc: %w", err)
	}
	flags, _, _ := parseMountOptions(m.Options)
	var attr int
	for f, a := range map[uintptr]int{unix.MS_RDONLY: unix.MOUNT_ATTR_RDONLY, unix.MS_NOSUID: unix.MOUNT_ATTR_NOSUID,
		unix.MS_NODEV: unix.MOUNT_ATTR_NODEV, unix.MS_NOEXEC: unix.MOUNT_ATTR_NOEXEC} {
		if flags&f != 0 {
			attr |= a
		}
	}
	mnt, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, attr)
	if err != nil {
		return fmt.Errorf("container: fsmount proc: %w", err)
	}
	defer unix.Close(mnt)
	dest := filepath.Clean(m.Destination)
	if err := os.MkdirAll(dest, 0o555); err != nil {
		return fmt.Errorf("container: make %s: %w", dest, err)
	}
	if err := unix.MoveMount(mnt, "", unix.AT_FDCWD, dest, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("container: mount proc on %s: %w", dest, err)
	}
	return nil
}

// helper is thread T2: privileged, in T's mount (and network) namespace,
// running what T hands it. Its thread is started before T needs it
// (newHelper), so that making a thread overlaps T's own work; join moves
// it into T's namespaces once T has made them.
type helper struct {
	work chan func() error
	errs chan error
	dead chan struct{}
}

func newHelper() *helper {
	h := &helper{work: make(chan func() error), errs: make(chan error), dead: make(chan struct{})}
	onThread(func() {
		defer close(h.dead)
		var broken error
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			broken = fmt.Errorf("container: helper: unshare fs: %w", err)
		}
		for f := range h.work {
			if broken != nil {
				h.errs <- broken
				continue
			}
			// An error leaves the thread in unknown namespaces: it runs
			// nothing more.
			broken = f()
			h.errs <- broken
		}
	})
	return h
}

// join moves T2 into thread tid's mount namespace, and its network
// namespace when net is set, through hostProc (the host's /proc).
func (h *helper) join(hostProc, tid int, net bool) error {
	return h.run(func() error {
		kinds := []struct {
			name string
			flag int
		}{{"mnt", unix.CLONE_NEWNS}}
		if net {
			kinds = append(kinds, struct {
				name string
				flag int
			}{"net", unix.CLONE_NEWNET})
		}
		for _, k := range kinds {
			fd, err := unix.Openat(hostProc, fmt.Sprintf("%d/ns/%s", tid, k.name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("container: helper: %w", err)
			}
			err = unix.Setns(fd, k.flag)
			unix.Close(fd)
			if err != nil {
				return fmt.Errorf("container: helper: join %s namespace: %w", k.name, err)
			}
		}
		return nil
	})
}

func (h *helper) run(f func() error) error {
	h.work <- f
	return <-h.errs
}

func (h *helper) stop() {
	close(h.work)
	<-h.dead
}

// Launch creates and starts a container in one step — without an init
// process when the spec allows (see above), else as Create then Start.
func (r *Runtime) Launch(ctx context.Context, id, bundle string, spec *specs.Spec, opts CreateOptions) (*Process, error) {
	flags, userNS, cgroupNS, err := checkSpec(id, spec)
	if err != nil {
		return nil, err
	}
	if r.direct(spec, userNS, cgroupNS) {
		return r.launchDirect(ctx, id, bundle, spec, flags, opts)
	}
	p, err := r.CreateFromSpec(ctx, id, bundle, spec, opts)
	if err != nil {
		return nil, err
	}
	if err := r.Start(ctx, id); err != nil {
		p.kill()
		r.Delete(context.WithoutCancel(ctx), id, true)
		return nil, err
	}
	return p, nil
}
