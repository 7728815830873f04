package container

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/tangram-dev/tangram/container/cgroup"
	"github.com/tangram-dev/tangram/container/logfile"
	"github.com/tangram-dev/tangram/container/network"
)

// Errors a caller may test for.
var (
	ErrExists     = errors.New("container: a container with this ID exists")
	ErrNotFound   = errNoState
	ErrNotCreated = errors.New("container: not in the created state")
	ErrRunning    = errors.New("container: still running (stop it, or delete with force)")
	ErrNotRunning = errors.New("container: not running")
)

// Config configures a Runtime.
type Config struct {
	// Root is the directory holding one directory of state per container
	// (default /var/lib/tangram/containers). It must be on a filesystem
	// that supports FIFOs.
	Root string
	// Logger receives the runtime's warnings (default: slog.Default()).
	Logger *slog.Logger
	// InitProcess makes Run and Launch use an init process like Create
	// always does, instead of preparing the container on a thread of this
	// process (see Launch).
	InitProcess bool
	// Bridge and Subnet are the bridge network's (containers whose spec
	// asks for it: annotation tangram.network=bridge); defaults tangram0
	// and 10.88.0.0/16.
	Bridge, Subnet string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Root: "/var/lib/tangram/containers"}
}

// Validate checks cfg.
func (c Config) Validate() error {
	if c.Root == "" || !filepath.IsAbs(c.Root) {
		return fmt.Errorf("container: root %q must be an absolute path", c.Root)
	}
	return nil
}

// Runtime creates and manages containers whose state lives under one root
// directory. Every method works from any process: a container created by
// one `tangram container create` is started, killed and deleted by others,
// as with runc.
type Runtime struct {
	cfg Config
	log *slog.Logger
	net *network.Network
}

// New returns a Runtime. It creates the root directory.
func New(cfg Config) (*Runtime, error) {
	if cfg.Root == "" {
		cfg.Root = DefaultConfig().Root
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Bridge == "" {
		cfg.Bridge = network.DefaultConfig().Bridge
	}
	if cfg.Subnet == "" {
		cfg.Subnet = network.DefaultConfig().Subnet
	}
	nw, err := network.New(network.Config{Bridge: cfg.Bridge, Subnet: cfg.Subnet, StateDir: filepath.Join(cfg.Root, ".net")})
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Root, 0o711); err != nil {
		return nil, fmt.Errorf("container: make root: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Runtime{cfg: cfg, log: log, net: nw}, nil
}

func (r *Runtime) dir(id string) string { return filepath.Join(r.cfg.Root, id) }

// makeDir makes a new container's state directory; ErrExists when the ID
// is taken.
func (r *Runtime) makeDir(id string) (string, error) {
	dir := r.dir(id)
	if err := os.Mkdir(dir, 0o711); err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("%w: %s", ErrExists, id)
		}
		return "", fmt.Errorf("container: %w", err)
	}
	return dir, nil
}

// CreateOptions are a container's standard streams. A nil stream reads
// from or writes to /dev/null. An *os.File is handed to the container as
// it is (it outlives the creating process); any other reader or writer is
// copied by goroutines of this process until the container exits, which
// only Process.Wait reports.
type CreateOptions struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Process is the creating process's handle on a container's init.
type Process struct {
	ID  string
	Pid int
	// Console is the pseudo-terminal's master when the spec asks for a
	// terminal (process.terminal): the container's input and output.
	Console *os.File
	cmd     *exec.Cmd // the init, when there is one
	proc    *child    // the process, started without an init
	copies  *copiers  // its streams' copiers
	r       *Runtime
	// noRecord: the caller deletes the container after the wait
	// (WaitThenDelete), so the exit code is not written to the state.
	noRecord bool
}

func (p *Process) kill() {
	if p.cmd != nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		return
	}
	p.proc.Kill()
	p.proc.Wait()
	p.copies.wait()
}

// Wait waits for the container's process to exit and returns its exit
// code (128+signal when a signal killed it), recording it in the state.
func (p *Process) Wait() (int, error) {
	var err error
	if p.cmd != nil {
		err = p.cmd.Wait()
	} else {
		ws, werr := p.proc.Wait()
		if p.copies.stdin != nil {
			p.copies.stdin.Close()
		}
		p.copies.wait()
		if werr != nil {
			return -1, fmt.Errorf("container: wait %s: %w", p.ID, werr)
		}
		code := exitCode(syscall.WaitStatus(ws))
		p.recordExit(code)
		return code, nil
	}
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return -1, fmt.Errorf("container: wait %s: %w", p.ID, err)
		}
		code = exitCode(ee.Sys().(syscall.WaitStatus))
	}
	p.recordExit(code)
	return code, nil
}

// WaitThenDelete waits for the container's process like Wait, then
// deletes the container (Delete with force), returning the exit code and
// the first error. The exit code is not written into the state first: the
// file is removed at once (a one-shot run saves a write and a rename).
func (p *Process) WaitThenDelete(ctx context.Context) (int, error) {
	p.noRecord = true
	code, err := p.Wait()
	if derr := p.r.Delete(ctx, p.ID, true); derr != nil && err == nil {
		err = derr
	}
	return code, err
}

// exitCode is a wait status as a shell reports it: 128+signal when a
// signal killed the process.
func exitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// recordExit writes the exit code into the container's state.
func (p *Process) recordExit(code int) {
	if p.noRecord {
		return
	}
	if st, err := readState(p.r.dir(p.ID)); err == nil {
		st.ExitCode = &code
		st.Status = Stopped
		_ = writeState(p.r.dir(p.ID), st)
	}
}

// Create sets a container up from bundle (a directory with config.json and
// usually rootfs/) and leaves its init waiting for Start: namespaces made
// at clone, cgroup limits set, filesystems mounted and the root pivoted,
// user and capabilities switched. The process the spec names has not
// begun.
func (r *Runtime) Create(ctx context.Context, id, bundle string, opts CreateOptions) (*Process, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	bundle, err := filepath.Abs(bundle)
	if err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	spec, err := LoadSpec(bundle)
	if err != nil {
		return nil, err
	}
	return r.CreateFromSpec(ctx, id, bundle, spec, opts)
}

// CreateFromSpec is Create with the spec given rather than read from the
// bundle (bundle is recorded in the state only).
func (r *Runtime) CreateFromSpec(ctx context.Context, id, bundle string, spec *specs.Spec, opts CreateOptions) (_ *Process, err error) {
	flags, userNS, cgroupNS, err := checkSpec(id, spec)
	if err != nil {
		return nil, err
	}
	dir, err := r.makeDir(id)
	if err != nil {
		return nil, err
	}
	var group *cgroup.Group
	var cmd *exec.Cmd
	var attached *network.Endpoint
	defer func() {
		if err == nil {
			return
		}
		if attached != nil {
			if derr := r.network().Detach(id, attached); derr != nil {
				r.log.Warn("container: cleaning up a failed create", "id", id, "err", derr)
			}
		}
		if cmd != nil && cmd.Process != nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if group != nil {
			if derr := group.Destroy(); derr != nil {
				r.log.Warn("container: cleaning up a failed create", "id", id, "err", derr)
			}
		}
		os.RemoveAll(dir)
	}()
	fifoPath := filepath.Join(dir, "exec.fifo")
	old := unix.Umask(0)
	err = unix.Mkfifo(fifoPath, 0o622)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("container: make exec fifo: %w", err)
	}
	var cgPath string
	if group, cgPath, err = makeGroup(id, spec); err != nil {
		return nil, err
	}
	st := &State{
		OCIVersion: specs.Version, ID: id, Status: Creating, Bundle: bundle,
		Annotations: spec.Annotations, Rootfs: spec.Root.Path, Cgroup: cgPath, Created: time.Now().UTC(),
	}
	if err := writeState(dir, st); err != nil {
		return nil, err
	}

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("container: socketpair: %w", err)
	}
	parentSock := os.NewFile(uintptr(fds[0]), "init-parent")
	childSock := os.NewFile(uintptr(fds[1]), "init-child")
	defer parentSock.Close()
	defer childSock.Close()
	fifoFD, err := unix.Open(fifoPath, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("container: open exec fifo: %w", err)
	}
	fifoFile := os.NewFile(uintptr(fifoFD), "exec-fifo")
	defer fifoFile.Close()

	cmd = exec.Command("/proc/self/exe")
	cmd.Args = []string{"container-init", id}
	cmd.Env = []string{initEnv + "=1"}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = opts.Stdin, opts.Stdout, opts.Stderr
	cmd.ExtraFiles = []*os.File{childSock, fifoFile}
	attr := &syscall.SysProcAttr{Cloneflags: flags}
	if userNS {
		for _, m := range spec.Linux.UIDMappings {
			attr.UidMappings = append(attr.UidMappings, syscall.SysProcIDMap{ContainerID: int(m.ContainerID), HostID: int(m.HostID), Size: int(m.Size)})
		}
		for _, m := range spec.Linux.GIDMappings {
			attr.GidMappings = append(attr.GidMappings, syscall.SysProcIDMap{ContainerID: int(m.ContainerID), HostID: int(m.HostID), Size: int(m.Size)})
		}
		attr.GidMappingsEnableSetgroups = os.Geteuid() == 0
		// Become the namespace's root once the maps are written: the
		// clone's credentials are still this process's (host root, not
		// mapped inside), and exec would drop every capability.
		attr.Credential = &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true}
	}
	cgFD, closeCg, err := group.FD()
	if err != nil {
		return nil, err
	}
	defer closeCg()
	if cgFD >= 0 {
		// v2: clone3 places the child in its group before it runs a
		// single instruction.
		attr.UseCgroupFD, attr.CgroupFD = true, cgFD
	}
	cmd.SysProcAttr = attr
	if err := startInGroup(cmd, group, cgFD < 0); err != nil {
		return nil, err
	}
	childSock.Close()
	order := initOrder{Spec: spec, BindDevices: userNS, CgroupNS: cgroupNS}
	b, err := json.Marshal(order)
	if err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	if _, err := parentSock.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("container: send orders to init: %w", err)
	}
	var console *os.File
	defer func() {
		if err != nil && console != nil {
			console.Close()
		}
	}()
	if spec.Process.Terminal {
		if console, err = receiveConsole(ctx, parentSock); err != nil {
			return nil, err
		}
	}
	reply, err := readReply(ctx, parentSock)
	if err != nil {
		return nil, err
	}
	if reply.Error != "" {
		return nil, fmt.Errorf("container: create %s: %s", id, strings.TrimPrefix(reply.Error, "container: "))
	}
	start, _, ok := procStart(cmd.Process.Pid)
	if !ok {
		return nil, fmt.Errorf("container: create %s: init exited after reporting ready", id)
	}
	if mode := spec.Annotations[AnnotationNetwork]; mode != "" {
		if mode != "bridge" {
			return nil, fmt.Errorf("container: annotation %s=%q: only bridge is known", AnnotationNetwork, mode)
		}
		if flags&unix.CLONE_NEWNET == 0 {
			return nil, fmt.Errorf("container: a bridge network needs a network namespace")
		}
		ports, err := parsePorts(spec.Annotations[AnnotationPorts])
		if err != nil {
			return nil, err
		}
		st.Network = &network.Endpoint{Bridge: r.cfg.Bridge}
		if err := writeState(dir, st); err != nil {
			return nil, err
		}
		ep, err := r.network().Attach(id, cmd.Process.Pid, ports)
		if err != nil {
			return nil, err
		}
		attached, st.Network = ep, ep
	}
	st.Pid, st.InitStart, st.Status = cmd.Process.Pid, start, Created
	if err := writeState(dir, st); err != nil {
		return nil, err
	}
	return &Process{ID: id, Pid: cmd.Process.Pid, Console: console, cmd: cmd, r: r}, nil
}

// startInGroup starts cmd in group. On v2 clone3 has placed it already
// (CgroupFD in its attributes). On v1 a thread of this process joins the
// group, forks the child there and leaves: moving a thread of its own is
// far cheaper for the kernel than moving another process afterwards (see
// cgroup.Group.AddSelf), and the child runs nothing outside its group.
func startInGroup(cmd *exec.Cmd, group *cgroup.Group, v1 bool) error {
	if !v1 || group == nil {
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("container: start init: %w", err)
		}
		return nil
	}
	errc := make(chan error, 1)
	go func() {
		// On an error the thread stays locked: it may be left in a group,
		// so it ends with this goroutine instead of serving others.
		runtime.LockOSThread()
		restore, err := group.AddSelf()
		if err != nil {
			errc <- err
			return
		}
		err = cmd.Start()
		if rerr := restore(); rerr != nil {
			errc <- errors.Join(err, rerr)
			return
		}
		runtime.UnlockOSThread()
		if err != nil {
			err = fmt.Errorf("container: start init: %w", err)
		}
		errc <- err
	}()
	return <-errc
}

// receiveConsole takes the pseudo-terminal master the init sends (or its
// error) and acknowledges it.
func receiveConsole(ctx context.Context, sock *os.File) (*os.File, error) {
	deadline := time.Now().Add(30 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	sc, err := sock.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	sock.SetReadDeadline(deadline)
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	var n, oobn int
	var rerr error
	err = sc.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return nil, fmt.Errorf("container: waiting for the console: %w", err)
	}
	if n == 0 {
		return nil, errors.New("container: init exited before sending the console")
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) == 0 {
		var rep initReply
		if json.Unmarshal(buf[:n], &rep) == nil && rep.Error != "" {
			return nil, fmt.Errorf("container: %s", strings.TrimPrefix(rep.Error, "container: "))
		}
		return nil, fmt.Errorf("container: init sent %q instead of the console", buf[:n])
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("container: console descriptor: %v", err)
	}
	console := os.NewFile(uintptr(fds[0]), "console")
	if _, err := sock.Write([]byte{1}); err != nil {
		console.Close()
		return nil, fmt.Errorf("container: acknowledge console: %w", err)
	}
	return console, nil
}

// checkSpec validates a spec for a container id and returns the
// namespaces to make at clone.
func checkSpec(id string, spec *specs.Spec) (flags uintptr, userNS, cgroupNS bool, err error) {
	if err := ValidateID(id); err != nil {
		return 0, false, false, err
	}
	if err := validateSpec(spec); err != nil {
		return 0, false, false, err
	}
	if c := spec.Process.Capabilities; c != nil {
		for _, set := range [][]string{c.Bounding, c.Effective, c.Permitted, c.Inheritable, c.Ambient} {
			if _, err := capSet(set); err != nil {
				return 0, false, false, err
			}
		}
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Path != "" {
			return 0, false, false, fmt.Errorf("container: joining an existing %s namespace (%s) is not supported", ns.Type, ns.Path)
		}
		switch ns.Type {
		case specs.PIDNamespace:
			flags |= unix.CLONE_NEWPID
		case specs.NetworkNamespace:
			flags |= unix.CLONE_NEWNET
		case specs.MountNamespace:
			flags |= unix.CLONE_NEWNS
		case specs.IPCNamespace:
			flags |= unix.CLONE_NEWIPC
		case specs.UTSNamespace:
			flags |= unix.CLONE_NEWUTS
		case specs.UserNamespace:
			flags |= unix.CLONE_NEWUSER
			userNS = true
		case specs.CgroupNamespace:
			cgroupNS = true
		}
	}
	for _, rl := range spec.Process.Rlimits {
		if _, ok := rlimitNames[rl.Type]; !ok {
			return 0, false, false, fmt.Errorf("container: unknown rlimit %q", rl.Type)
		}
	}
	return flags, userNS, cgroupNS, nil
}

// makeGroup makes the container's cgroup and sets its limits, with the
// default devices allowed. A rootless runtime (not root) cannot make
// groups: it makes none — nil, "" — unless the spec asks for limits,
// which it refuses.
func makeGroup(id string, spec *specs.Spec) (*cgroup.Group, string, error) {
	if os.Geteuid() != 0 {
		if r := spec.Linux.Resources; r != nil && (r.Memory != nil || r.CPU != nil || r.Pids != nil || r.BlockIO != nil ||
			len(r.HugepageLimits) > 0 || r.Network != nil || len(r.Unified) > 0 || len(r.Rdma) > 0) {
			return nil, "", errors.New("container: resource limits need a cgroup, which a runtime that is not root cannot make: run as root, or drop the limits from linux.resources")
		}
		return nil, "", nil
	}
	cgPath := spec.Linux.CgroupsPath
	if cgPath == "" {
		cgPath = "tangram/" + id
	}
	group, err := cgroup.New(cgPath, cgroup.Controllers(spec.Linux.Resources)...)
	if err != nil {
		return nil, "", err
	}
	res := spec.Linux.Resources
	if res == nil {
		res = &specs.LinuxResources{}
	}
	withDefaults := *res
	withDefaults.Devices = append(append([]specs.LinuxDeviceCgroup{}, res.Devices...), defaultDeviceRules()...)
	if err := group.Set(&withDefaults); err != nil {
		group.Destroy()
		return nil, "", err
	}
	return group, cgPath, nil
}

func readReply(ctx context.Context, sock *os.File) (initReply, error) {
	type res struct {
		rep initReply
		err error
	}
	ch := make(chan res, 1)
	deadline := time.Now().Add(30 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	sock.SetReadDeadline(deadline)
	go func() {
		line, err := bufio.NewReader(sock).ReadBytes('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("container: init exited before reporting")
			} else {
				err = fmt.Errorf("container: waiting for init: %w", err)
			}
			ch <- res{err: err}
			return
		}
		var rep initReply
		if err := json.Unmarshal(line, &rep); err != nil {
			ch <- res{err: fmt.Errorf("container: init's reply %q: %w", line, err)}
			return
		}
		ch <- res{rep: rep}
	}()
	select {
	case r := <-ch:
		return r.rep, r.err
	case <-ctx.Done():
		// Unblock the reader so its goroutine ends with this call.
		sock.SetReadDeadline(time.Now())
		<-ch
		return initReply{}, fmt.Errorf("container: waiting for init: %w", ctx.Err())
	}
}

// startRaceHook, when set (by a test), runs between Start's read of the
// exec FIFO and its check that the init lives.
var startRaceHook func(pid int)

// Start lets a created container's process run.
func (r *Runtime) Start(ctx context.Context, id string) error {
	st, err := r.State(id)
	if err != nil {
		return err
	}
	if st.Status != Created {
		return fmt.Errorf("%w: %s is %s", ErrNotCreated, id, st.Status)
	}
	fifoPath := filepath.Join(r.dir(id), "exec.fifo")
	// The init is blocked opening the FIFO for writing; a non-blocking
	// open for reading meets it, and the read gets its byte.
	f, err := os.OpenFile(fifoPath, os.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("container: start %s: open exec fifo: %w", id, err)
	}
	defer f.Close()
	if err := unix.SetNonblock(int(f.Fd()), true); err != nil {
		return fmt.Errorf("container: %w", err)
	}
	buf := make([]byte, 1)
	for {
		n, err := unix.Read(int(f.Fd()), buf)
		if n == 1 {
			break
		}
		if err != nil && !errors.Is(err, unix.EAGAIN) {
			return fmt.Errorf("container: start %s: read exec fifo: %w", id, err)
		}
		// EOF (no writer yet, or the init died) or nothing yet.
		if startRaceHook != nil {
			startRaceHook(st.Pid)
		}
		if !st.alive() {
			// The init may have written its byte, exec'd and finished
			// between the read above and this check: the byte tells.
			if n, _ := unix.Read(int(f.Fd()), buf); n == 1 {
				break
			}
			return fmt.Errorf("container: start %s: init exited before start", id)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("container: start %s: %w", id, err)
		}
		pfd := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLIN}}
		unix.Poll(pfd, 10)
	}
	if err := os.Remove(fifoPath); err != nil {
		return fmt.Errorf("container: start %s: %w", id, err)
	}
	st.Status = Running
	return writeState(r.dir(id), st)
}

// State returns a container's state with its status as of now.
func (r *Runtime) State(id string) (*State, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	st, err := readState(r.dir(id))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return nil, err
	}
	r.refresh(st)
	return st, nil
}

func (r *Runtime) refresh(st *State) {
	if st.Status == Creating {
		return
	}
	if !st.alive() {
		st.Status = Stopped
		return
	}
	if _, err := os.Stat(filepath.Join(r.dir(st.ID), "exec.fifo")); err == nil {
		st.Status = Created
		return
	}
	st.Status = Running
	if g, err := cgroup.Open(st.Cgroup); err == nil {
		if frozen, _ := g.Frozen(); frozen {
			st.Status = Paused
		}
	}
}

// List returns every container's state, by ID.
func (r *Runtime) List() ([]*State, error) {
	ents, err := os.ReadDir(r.cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	var out []*State
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		st, err := r.State(e.Name())
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return nil, err
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Kill sends sig to the container's init, or with all to every process in
// its cgroup. A container without a cgroup (made by a rootless runtime)
// has only its init to signal; SIGKILL to it ends its whole PID namespace.
func (r *Runtime) Kill(id string, sig syscall.Signal, all bool) error {
	st, err := r.State(id)
	if err != nil {
		return err
	}
	if st.Status == Stopped {
		return fmt.Errorf("%w: %s", ErrNotRunning, id)
	}
	if all && st.Cgroup != "" {
		g, err := cgroup.Open(st.Cgroup)
		if err != nil {
			return err
		}
		return g.Kill(sig)
	}
	if err := unix.Kill(st.Pid, sig); err != nil {
		return fmt.Errorf("container: kill %s: %w", id, err)
	}
	return nil
}

// Pause freezes every process of the container.
func (r *Runtime) Pause(id string) error {
	st, err := r.State(id)
	if err != nil {
		return err
	}
	if st.Status != Running {
		return fmt.Errorf("%w: %s is %s", ErrNotRunning, id, st.Status)
	}
	if st.Cgroup == "" {
		return errNoCgroup(id, "pause")
	}
	g, err := cgroup.Open(st.Cgroup)
	if err != nil {
		return err
	}
	return g.Freeze()
}

// Resume thaws a paused container.
func (r *Runtime) Resume(id string) error {
	st, err := r.State(id)
	if err != nil {
		return err
	}
	if st.Status != Paused {
		return fmt.Errorf("container: %s is %s, not paused", id, st.Status)
	}
	if st.Cgroup == "" {
		return errNoCgroup(id, "resume")
	}
	g, err := cgroup.Open(st.Cgroup)
	if err != nil {
		return err
	}
	return g.Thaw()
}

// Stats reads the container's cgroup counters.
func (r *Runtime) Stats(id string) (cgroup.Stats, error) {
	st, err := r.State(id)
	if err != nil {
		return cgroup.Stats{}, err
	}
	if st.Cgroup == "" {
		return cgroup.Stats{}, errNoCgroup(id, "stats")
	}
	g, err := cgroup.Open(st.Cgroup)
	if err != nil {
		return cgroup.Stats{}, err
	}
	return g.Stats()
}

// Delete removes a stopped container: its cgroup and its state. With
// force, a live one is killed first (SIGKILL to every process of its
// cgroup, thawed if paused) and Delete waits for it to go.
func (r *Runtime) Delete(ctx context.Context, id string, force bool) error {
	st, err := r.State(id)
	if err != nil {
		return err
	}
	g, gerr := cgroup.Open(st.Cgroup)
	if st.Status != Stopped {
		if !force {
			return fmt.Errorf("%w: %s is %s", ErrRunning, id, st.Status)
		}
		if gerr == nil {
			g.Kill(unix.SIGKILL)
			if st.Status == Paused {
				g.Thaw()
			}
		}
		unix.Kill(st.Pid, unix.SIGKILL)
		for st.alive() {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("container: delete %s: waiting for it to die: %w", id, err)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if gerr == nil {
		// Children of a dead init are killed by the kernel with its PID
		// namespace; without one they may linger.
		for i := 0; i < 1000; i++ {
			pids, err := g.Procs()
			if err != nil || len(pids) == 0 {
				break
			}
			g.Kill(unix.SIGKILL)
			time.Sleep(time.Millisecond)
		}
		if err := g.Destroy(); err != nil {
			return err
		}
	}
	if st.Network != nil {
		if err := r.network().Detach(id, st.Network); err != nil {
			return err
		}
	}
	if err := r.releaseBundle(st); err != nil {
		return err
	}
	for _, f := range logfile.Files(r.LogPath(id)) {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("container: delete %s: %w", id, err)
		}
	}
	if err := removeDir(r.dir(id)); err != nil {
		return fmt.Errorf("container: delete %s: %w", id, err)
	}
	return nil
}

// removeDir removes a container's directory: the files the runtime puts
// there one by one, then the directory; os.RemoveAll if anything else is
// in it (it takes several more system calls to find out).
func removeDir(dir string) error {
	for _, f := range []string{"state.json", "exec.fifo"} {
		if err := unix.Unlink(filepath.Join(dir, f)); err != nil && err != unix.ENOENT {
			return os.RemoveAll(dir)
		}
	}
	if err := unix.Rmdir(dir); err != nil && err != unix.ENOENT {
		return os.RemoveAll(dir)
	}
	return nil
}

// Run creates, starts and waits for a container, deletes it, and returns
// its exit code. Cancelling ctx kills it.
func (r *Runtime) Run(ctx context.Context, id, bundle string, opts CreateOptions) (int, error) {
	bundle, err := filepath.Abs(bundle)
	if err != nil {
		return -1, fmt.Errorf("container: %w", err)
	}
	spec, err := LoadSpec(bundle)
	if err != nil {
		return -1, err
	}
	return r.RunSpec(ctx, id, bundle, spec, opts)
}

// RunSpec is Run with the spec given.
func (r *Runtime) RunSpec(ctx context.Context, id, bundle string, spec *specs.Spec, opts CreateOptions) (int, error) {
	p, err := r.Launch(ctx, id, bundle, spec, opts)
	if err != nil {
		return -1, err
	}
	return r.runCreated(ctx, p)
}

func (r *Runtime) runCreated(ctx context.Context, p *Process) (int, error) {
	cleanup := func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := r.Delete(dctx, p.ID, true); err != nil {
			r.log.Warn("container: delete after run", "id", p.ID, "err", err)
		}
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
			r.Kill(p.ID, unix.SIGKILL, true)
		case <-done:
		}
	}()
	p.noRecord = true // deleted next
	code, err := p.Wait()
	close(done)
	<-stopped
	cleanup()
	return code, err
}

// Stop asks the container's process to end with SIGTERM and, if it has
// not after grace, kills every process of the container with SIGKILL. It
// returns once the process is gone. (A PID 1 with no SIGTERM handler
// ignores SIGTERM, so such a container takes the whole grace period.)
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	st, err := r.State(id)
	if err != nil {
		return err
	}
	if st.Status == Stopped {
		return nil
	}
	if st.Status == Paused {
		if err := r.Resume(id); err != nil {
			return err
		}
	}
	if err := unix.Kill(st.Pid, unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("container: stop %s: %w", id, err)
	}
	deadline := time.Now().Add(grace)
	for st.alive() && time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("container: stop %s: %w", id, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st.alive() {
		if g, err := cgroup.Open(st.Cgroup); err == nil {
			g.Kill(unix.SIGKILL)
		}
		unix.Kill(st.Pid, unix.SIGKILL)
		for st.alive() {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("container: stop %s: %w", id, err)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}

// ProcessInfo is one process of a container, as the host sees it.
type ProcessInfo struct {
	Pid     int    `json:"pid"`
	Command string `json:"command"`
}

// Processes lists the processes in the container's cgroup.
func (r *Runtime) Processes(id string) ([]ProcessInfo, error) {
	st, err := r.State(id)
	if err != nil {
		return nil, err
	}
	var pids []int
	if st.Cgroup == "" {
		// No cgroup (a rootless runtime made it): the processes in the
		// init's PID namespace.
		pids, err = pidNamespaceMembers(st.Pid)
	} else {
		var g *cgroup.Group
		if g, err = cgroup.Open(st.Cgroup); err == nil {
			pids, err = g.Procs()
		}
	}
	if err != nil {
		return nil, err
	}
	out := make([]ProcessInfo, 0, len(pids))
	for _, pid := range pids {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		out = append(out, ProcessInfo{Pid: pid, Command: strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))})
	}
	return out, nil
}

// pidNamespaceMembers lists the processes in the PID namespace of pid
// (pid included), as this host sees them.
func pidNamespaceMembers(pid int) ([]int, error) {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/pid"); err == nil && l == ns {
			out = append(out, p)
		}
	}
	sort.Ints(out)
	return out, nil
}

// errNoCgroup explains why a container made without a cgroup cannot be
// paused or measured.
func errNoCgroup(id, what string) error {
	return fmt.Errorf("container: %s has no cgroup (a runtime that is not root made it): %s needs one", id, what)
}

// Annotations that ask for networking: tangram.network=bridge puts the
// container on the runtime's bridge; tangram.ports publishes ports
// ("8080:80,5353:53/udp").
const (
	AnnotationNetwork = "tangram.network"
	AnnotationPorts   = "tangram.ports"
)

func (r *Runtime) network() *network.Network { return r.net }

func parsePorts(s string) ([]network.Port, error) {
	var out []network.Port
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		port, err := network.ParsePort(p)
		if err != nil {
			return nil, err
		}
		out = append(out, port)
	}
	return out, nil
}

// Root is the directory holding the containers' state.
func (r *Runtime) Root() string { return r.cfg.Root }

// LogPath is where a detached container's output is kept when its creator
// sends it there (tangram container run -d does): the container's
// process writes the file itself, so no process of the runtime stays
// behind to copy it — unless the log rotates (package logfile; older
// files are LogPath.1, .2, …), which takes a process that copies. Delete
// removes them all.
func (r *Runtime) LogPath(id string) string { return filepath.Join(r.cfg.Root, ".logs", id+".log") }

// OpenLog opens (creating) the container's log file for appending.
func (r *Runtime) OpenLog(id string) (*os.File, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(r.LogPath(id)), 0o700); err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	f, err := os.OpenFile(r.LogPath(id), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("container: open log: %w", err)
	}
	return f, nil
}

// RemoveNetwork takes the runtime's bridge network off the host (its
// bridge and nftables table), refusing while any container it knows of
// holds an address on it — delete those first.
func (r *Runtime) RemoveNetwork() error {
	all, err := r.List()
	if err != nil {
		return err
	}
	exists := map[string]bool{}
	for _, s := range all {
		exists[s.ID] = true
	}
	return r.net.Remove(func(id string) bool { return exists[id] })
}
