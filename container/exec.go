package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/tangram-dev/tangram/container/cgroup"
)

// ExecOptions describe a further process in a running container. Empty
// fields take the container's own process's values.
type ExecOptions struct {
	Args           []string
	Env            []string // added to the container process's environment
	Cwd            string
	User           *specs.User
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Terminal gives the process a pseudo-terminal from the container's
	// own devpts as its standard streams and controlling terminal
	// (exec -t); Stdin, Stdout and Stderr are not used. OnConsole gets
	// the terminal's master side once the process runs, and owns it: what
	// is written to it is the process's input, what it reads is the
	// output, and reads end (EIO) once everything holding the terminal
	// has ended.
	Terminal  bool
	OnConsole func(console *os.File)
}

// Exec runs a further process inside a running container — its
// namespaces, root, cgroup, user and capabilities — and returns its exit
// code once it ends (128+signal when a signal killed it). Cancelling ctx
// kills it.
//
// How, with Go's threads: namespaces, root, credentials and capabilities
// belong to a thread, not a process. Exec takes one OS thread for itself
// (runtime.LockOSThread), gives it a private filesystem context
// (unshare(CLONE_FS), which setns into a mount namespace requires), joins
// the container's namespaces from it, switches its user and capabilities,
// and forks the process from it; the child inherits exactly that thread's
// state and is born inside the container's PID namespace. The thread is
// never handed back to the scheduler: its goroutine exits still locked, so
// Go ends the thread. Only a user namespace cannot be joined this way (the
// kernel wants a single-threaded caller); Exec refuses those containers.
func (r *Runtime) Exec(ctx context.Context, id string, o ExecOptions) (int, error) {
	st, err := r.State(id)
	if err != nil {
		return -1, err
	}
	if st.Status != Running && st.Status != Created {
		return -1, fmt.Errorf("%w: %s is %s", ErrNotRunning, id, st.Status)
	}
	if len(o.Args) == 0 {
		return -1, errors.New("container: exec: no command")
	}
	spec, err := LoadSpec(st.Bundle)
	if err != nil {
		return -1, err
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.UserNamespace {
			return -1, fmt.Errorf("container: exec into %s: it has a user namespace, which a multi-threaded Go process cannot join", id)
		}
	}
	// Open the namespaces and the cgroup while the init is known alive.
	type nsFile struct {
		typ  int
		file *os.File
	}
	var nss []nsFile
	defer func() {
		for _, n := range nss {
			n.file.Close()
		}
	}()
	// The mount namespace last: after it, /proc is the container's.
	order := []struct {
		name string
		typ  specs.LinuxNamespaceType
		flag int
	}{
		{"ipc", specs.IPCNamespace, unix.CLONE_NEWIPC}, {"uts", specs.UTSNamespace, unix.CLONE_NEWUTS},
		{"net", specs.NetworkNamespace, unix.CLONE_NEWNET}, {"pid", specs.PIDNamespace, unix.CLONE_NEWPID},
		{"cgroup", specs.CgroupNamespace, unix.CLONE_NEWCGROUP}, {"mnt", specs.MountNamespace, unix.CLONE_NEWNS},
	}
	for _, n := range order {
		if !slices.ContainsFunc(spec.Linux.Namespaces, func(x specs.LinuxNamespace) bool { return x.Type == n.typ }) {
			continue
		}
		f, err := os.Open(filepath.Join("/proc", strconv.Itoa(st.Pid), "ns", n.name))
		if err != nil {
			return -1, fmt.Errorf("container: exec: open %s namespace: %w", n.name, err)
		}
		nss = append(nss, nsFile{n.flag, f})
	}
	if !st.alive() {
		return -1, fmt.Errorf("%w: %s exited", ErrNotRunning, id)
	}
	g, err := cgroup.Open(st.Cgroup)
	if err != nil {
		return -1, err
	}
	cgFD, closeCg, err := g.FD()
	if err != nil {
		return -1, err
	}
	defer closeCg()

	p := *spec.Process
	p.Args = o.Args
	p.Env = append(slices.Clone(p.Env), o.Env...)
	if o.Cwd != "" {
		p.Cwd = o.Cwd
	}
	if o.User != nil {
		p.User = *o.User
	}
	if p.Cwd == "" {
		p.Cwd = "/"
	}

	type started struct {
		proc *os.Process
		err  error
	}
	ch := make(chan started, 1)
	// Standard streams: files are handed over as they are; anything else
	// goes through pipes copied by goroutines of this call.
	if o.Terminal && o.OnConsole == nil {
		return -1, errors.New("container: exec with a terminal needs OnConsole to receive it")
	}
	var files []*os.File
	var copies *copiers
	closeAfter := func() {}
	if !o.Terminal {
		if files, copies, closeAfter, err = stdio(o.Stdin, o.Stdout, o.Stderr); err != nil {
			return -1, err
		}
	} else {
		copies = &copiers{done: make(chan struct{})}
	}
	var console *os.File
	onThread(func() {
		ch <- func() started {
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				return started{err: fmt.Errorf("container: exec: unshare fs: %w", err)}
			}
			if cgFD < 0 {
				// v1: the thread joins the groups, so its child is born in
				// them, and leaves them once the child is forked.
				restore, err := g.AddSelf()
				if err != nil {
					return started{err: err}
				}
				defer restore()
			}
			for _, n := range nss {
				if err := unix.Setns(int(n.file.Fd()), n.typ); err != nil {
					return started{err: fmt.Errorf("container: exec: join namespace: %w", err)}
				}
			}
			path, err := lookPath(p.Args[0], p.Env)
			if err != nil {
				return started{err: err}
			}
			files := files
			if o.Terminal {
				// The container's /dev/ptmx: this thread's root is the
				// container's since it joined the mount namespace.
				master, slave, err := openPty(&p)
				if err != nil {
					return started{err: err}
				}
				console = os.NewFile(uintptr(master), "console")
				tty := os.NewFile(uintptr(slave), "tty")
				defer tty.Close()
				files = []*os.File{tty, tty, tty}
			}
			if err := finishProcess(&p); err != nil {
				return started{err: err}
			}
			attr := &syscall.SysProcAttr{Setsid: true, Setctty: o.Terminal}
			if cgFD >= 0 {
				attr.UseCgroupFD, attr.CgroupFD = true, cgFD
			}
			proc, err := os.StartProcess(path, p.Args, &os.ProcAttr{Dir: p.Cwd, Env: p.Env, Files: files, Sys: attr})
			if err != nil {
				return started{err: fmt.Errorf("container: exec %s: %w", p.Args[0], err)}
			}
			return started{proc: proc}
		}()
	})
	s := <-ch
	closeAfter()
	if s.err != nil {
		copies.stop()
		if console != nil {
			console.Close()
		}
		return -1, s.err
	}
	if console != nil {
		o.OnConsole(console)
	}
	done := make(chan struct{})
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		select {
		case <-ctx.Done():
			s.proc.Kill()
		case <-done:
		}
	}()
	ps, err := s.proc.Wait()
	close(done)
	<-killed
	if copies.stdin != nil {
		copies.stdin.Close()
	}
	copies.wait()
	if err != nil {
		return -1, fmt.Errorf("container: exec: wait: %w", err)
	}
	ws := ps.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

// copiers are the goroutines moving a process's streams through pipes.
type copiers struct {
	done    chan struct{}
	n       int
	closers []io.Closer
	stdin   io.Closer // the pipe into the process, closed once it exits
}

func (c *copiers) wait() {
	for range c.n {
		<-c.done
	}
}

func (c *copiers) stop() {
	for _, cl := range c.closers {
		cl.Close()
	}
	c.wait()
}

// stdio returns the three files for a child: the given files, /dev/null
// for nil, or a pipe with a copying goroutine. closeAfter closes this
// side's copies of the child's ends once the child has them.
func stdio(in io.Reader, out, errw io.Writer) ([]*os.File, *copiers, func(), error) {
	c := &copiers{done: make(chan struct{}, 3)}
	var childEnds []*os.File
	files := make([]*os.File, 3)
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("container: %w", err)
	}
	childEnds = append(childEnds, devnull)
	fail := func(err error) ([]*os.File, *copiers, func(), error) {
		for _, f := range childEnds {
			f.Close()
		}
		c.stop()
		return nil, nil, nil, fmt.Errorf("container: %w", err)
	}
	switch v := in.(type) {
	case nil:
		files[0] = devnull
	case *os.File:
		files[0] = v
	default:
		r, w, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		files[0] = r
		childEnds = append(childEnds, r)
		c.n++
		c.closers = append(c.closers, w)
		c.stdin = w
		go func() { io.Copy(w, v); w.Close(); c.done <- struct{}{} }()
	}
	for i, wr := range []io.Writer{out, errw} {
		if i == 1 && wr != nil && sameWriter(out, errw) {
			// One writer for both, as os/exec does: two copiers writing
			// into one bytes.Buffer (ReadFrom) would overwrite each other.
			files[2] = files[1]
			break
		}
		switch v := wr.(type) {
		case nil:
			files[i+1] = devnull
		case *os.File:
			files[i+1] = v
		default:
			r, w, err := os.Pipe()
			if err != nil {
				return fail(err)
			}
			files[i+1] = w
			childEnds = append(childEnds, w)
			c.n++
			c.closers = append(c.closers, r)
			go func() { io.Copy(v, r); r.Close(); c.done <- struct{}{} }()
		}
	}
	return files, c, func() {
		for _, f := range childEnds {
			f.Close()
		}
	}, nil
}

// sameWriter reports whether a and b are the same writer (false for
// values that cannot be compared).
func sameWriter(a, b io.Writer) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}
