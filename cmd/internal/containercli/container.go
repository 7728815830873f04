// Package containercli holds the container and image commands: `tangram
// container`, `tangram image`, and the same commands as tangram-oci, the
// lean OCI runtime binary a containerd-style caller runs once per
// container operation.
package containercli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/tangram-dev/tangram/cmd/internal/cliout"
	"github.com/tangram-dev/tangram/container"
	"github.com/tangram-dev/tangram/container/logfile"
	"github.com/tangram-dev/tangram/container/network"
	"github.com/tangram-dev/tangram/container/seccomp"
)

// ExitCode is an error that ends the process with a given code and no
// message: `tangram container run` passes on the container's exit code.
type ExitCode int

func (e ExitCode) Error() string { return "exit status " + strconv.Itoa(int(e)) }

// Command returns `container`: runc's verbs and more. g is filled by the
// caller's flags before a command runs.
func Command(g *cliout.Printer) *cobra.Command {
	var root string
	c := &cobra.Command{
		Use:   "container",
		Short: "Run containers: OCI bundles, namespaces, cgroups, pivot_root (runc's verbs)",
		Long: `Run containers from OCI runtime bundles (a directory with config.json and rootfs/).

The verbs are runc's, so a containerd-style caller can use tangram in its place
(tangram-oci is the same commands in a small binary that starts faster):
create, start, state, kill, delete; run does all of them in the foreground.
Containers' state lives under --root, one directory each. Needs root.`,
	}
	c.PersistentFlags().StringVar(&root, "root", "", "state directory (default: env TANGRAM_CONTAINER_ROOT, else /var/lib/tangram/containers; not root: $XDG_RUNTIME_DIR/tangram/containers)")
	var images string
	if imagesOpen != nil {
		c.PersistentFlags().StringVar(&images, "images", "", "image store (default: env TANGRAM_IMAGE_ROOT, else "+imagesRoot+")")
	}
	store := func() (container.Images, error) { return openImages(images) }
	rt := func() (*container.Runtime, error) {
		if root == "" {
			root = cliout.EnvOr("TANGRAM_CONTAINER_ROOT", defaultRoot())
		}
		abs, err := filepath.Abs(root)
		if err != nil {
			return nil, err
		}
		return container.New(container.Config{Root: abs})
	}
	writePid := func(file string, pid int) error {
		if file == "" {
			return nil
		}
		return os.WriteFile(file, []byte(strconv.Itoa(pid)), 0o644)
	}

	var specRootfs, specBundle, specSeccomp string
	var specRootless bool
	spec := &cobra.Command{
		Use:   "spec [-- command [args...]]",
		Short: "Write a default config.json into a bundle (runc's defaults; the command runs as the process)",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{"sh"}
			}
			path := filepath.Join(specBundle, "config.json")
			if _, err := os.Stat(path); err == nil {
				return fmt.Errorf("%s exists; remove it first", path)
			}
			s := container.DefaultSpec(specRootfs, args)
			if specRootless {
				container.Rootless(s, os.Geteuid(), os.Getegid())
			}
			var err error
			if s.Linux.Seccomp, err = seccompProfile(specSeccomp); err != nil {
				return err
			}
			if err := container.WriteSpec(specBundle, s); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "wrote", path)
			return nil
		},
	}
	spec.Flags().StringVarP(&specBundle, "bundle", "b", ".", "bundle directory")
	spec.Flags().StringVar(&specRootfs, "rootfs", "rootfs", "root filesystem, relative to the bundle or absolute")
	spec.Flags().BoolVar(&specRootless, "rootless", os.Geteuid() != 0, "for a runtime that is not root: a user namespace mapping this user to root inside (default when not root)")
	spec.Flags().StringVar(&specSeccomp, "seccomp", "unconfined", "system call filter to write: unconfined (as runc spec), default, or a file holding linux.seccomp JSON")

	var bundle, pidFile, logMaxSize, consoleSocket string
	var detach, remove bool
	var logMaxFiles int
	var img imageFlags
	// makeOne makes the container from --image or from the bundle, created
	// (waiting for start) or launched (started).
	makeOne := func(ctx context.Context, r *container.Runtime, args []string, opts container.CreateOptions, launch bool) (*container.Process, error) {
		if img.ref == "" {
			if len(args) > 1 {
				return nil, fmt.Errorf("a command after the ID needs --image (a bundle's config.json names its process)")
			}
			if !launch {
				return r.Create(ctx, args[0], bundle, opts)
			}
			abs, err := filepath.Abs(bundle)
			if err != nil {
				return nil, err
			}
			spec, err := container.LoadSpec(abs)
			if err != nil {
				return nil, err
			}
			return r.Launch(ctx, args[0], abs, spec, opts)
		}
		s, err := store()
		if err != nil {
			return nil, err
		}
		o, err := img.options(args[1:])
		if err != nil {
			return nil, err
		}
		if launch {
			return r.LaunchImage(ctx, args[0], s, img.ref, o, opts)
		}
		return r.CreateFromImage(ctx, args[0], s, img.ref, o, opts)
	}
	run := &cobra.Command{
		Use:   "run ID [-- command [args...]]",
		Short: "Create, start and wait for a container, then delete it; exits with its exit code",
		Long: `Create, start and wait for a container, then delete it; exits with its exit code.

From a bundle (--bundle, default the current directory; its config.json names the
process), or from an image (--image; a command after -- replaces the image's).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := rt()
			if err != nil {
				return err
			}
			id := args[0]
			ctx := context.WithoutCancel(cmd.Context())
			if logMaxSize != "" && !detach {
				return fmt.Errorf("--log-max-size is for run -d (a foreground run's output is yours)")
			}
			if detach && (remove || logMaxSize != "") {
				job := monitorJob{Root: r.Root(), Images: images, ID: id, PidFile: pidFile, Remove: remove, LogMaxFiles: logMaxFiles}
				if logMaxSize != "" {
					if job.LogMaxSize, err = parseBytes(logMaxSize); err != nil {
						return fmt.Errorf("--log-max-size: %w", err)
					}
					if logMaxFiles < 1 {
						return fmt.Errorf("--log-max-files %d: keep at least 1", logMaxFiles)
					}
				}
				if img.ref == "" {
					if len(args) > 1 {
						return fmt.Errorf("a command after the ID needs --image (a bundle's config.json names its process)")
					}
					if job.Bundle, err = filepath.Abs(bundle); err != nil {
						return err
					}
				} else {
					job.Image = img.ref
					if job.ImageOptions, err = img.options(args[1:]); err != nil {
						return err
					}
				}
				if pidFile != "" {
					if job.PidFile, err = filepath.Abs(pidFile); err != nil {
						return err
					}
				}
				return spawnMonitor(cmd.Context(), job)
			}
			opts := container.CreateOptions{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
			if detach {
				// Nothing reads a detached container's input; its output
				// goes to its log (tangram container logs).
				log, err := r.OpenLog(id)
				if err != nil {
					return err
				}
				defer log.Close()
				opts = container.CreateOptions{Stdout: log, Stderr: log}
			}
			p, err := makeOne(ctx, r, args, opts, true)
			if err != nil {
				return err
			}
			if err := writePid(pidFile, p.Pid); err != nil {
				return err
			}
			if detach {
				if p.Console != nil {
					err := sendConsole(consoleSocket, p.Console)
					p.Console.Close()
					if err != nil {
						r.Delete(ctx, id, true)
						return err
					}
				}
				return nil
			}
			if p.Console != nil {
				restore := attachTerminal(p.Console)
				defer restore()
			}
			// Signals for this process go to the container's.
			sigs := make(chan os.Signal, 8)
			signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2)
			done := make(chan struct{})
			fwd := make(chan struct{})
			go func() {
				defer close(fwd)
				for {
					select {
					case s := <-sigs:
						r.Kill(id, s.(syscall.Signal), false)
					case <-done:
						return
					}
				}
			}()
			// The container is dead when the wait returns: the delete
			// has nothing to wait for, so it needs no deadline.
			code, err := p.WaitThenDelete(ctx)
			signal.Stop(sigs)
			close(done)
			<-fwd
			if err != nil {
				return err
			}
			if code != 0 {
				return ExitCode(code)
			}
			return nil
		},
	}
	run.Flags().StringVarP(&bundle, "bundle", "b", ".", "bundle directory")
	run.Flags().StringVar(&pidFile, "pid-file", "", "write the container's PID here")
	run.Flags().StringVar(&consoleSocket, "console-socket", "", "with -d and a terminal: send the terminal's master to this unix socket (runc's protocol)")
	run.Flags().BoolVarP(&detach, "detach", "d", false, "start it and return (delete it yourself once it stops, or --rm)")
	run.Flags().BoolVar(&remove, "rm", false, "delete the container when it ends (a foreground run always is; with -d a monitor process waits for it)")
	run.Flags().StringVar(&logMaxSize, "log-max-size", "", "with -d: rotate the log at this size, e.g. 10m (a monitor process writes it)")
	run.Flags().IntVar(&logMaxFiles, "log-max-files", 5, "with --log-max-size: log files kept, the current one included")
	img.add(run)

	create := &cobra.Command{
		Use:   "create ID [-- command [args...]]",
		Short: "Set a container up and leave it waiting for start",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := rt()
			if err != nil {
				return err
			}
			p, err := makeOne(cmd.Context(), r, args, container.CreateOptions{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}, false)
			if err != nil {
				return err
			}
			if p.Console != nil {
				err := sendConsole(consoleSocket, p.Console)
				p.Console.Close()
				if err != nil {
					r.Delete(cmd.Context(), args[0], true)
					return err
				}
			}
			return writePid(pidFile, p.Pid)
		},
	}
	create.Flags().StringVarP(&bundle, "bundle", "b", ".", "bundle directory")
	create.Flags().StringVar(&pidFile, "pid-file", "", "write the container's PID here")
	create.Flags().StringVar(&consoleSocket, "console-socket", "", "with process.terminal: send the terminal's master to this unix socket (runc's protocol)")
	img.add(create)
	var comment string
	commit := &cobra.Command{
		Use: "commit ID IMAGE", Short: "Make a new image of a container's changes (its overlay upper directory) on its image", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := rt()
			if err != nil {
				return err
			}
			s, err := store()
			if err != nil {
				return err
			}
			im, err := r.Commit(cmd.Context(), args[0], s, args[1], comment)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), im.Ref, im.Digest)
			return nil
		},
	}
	commit.Flags().StringVarP(&comment, "message", "m", "", "a comment for the new layer's history")

	simple := func(use, short string, f func(r *container.Runtime, id string) error) *cobra.Command {
		return &cobra.Command{
			Use: use + " ID", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				r, err := rt()
				if err != nil {
					return err
				}
				return f(r, args[0])
			},
		}
	}
	start := &cobra.Command{
		Use: "start ID", Short: "Run a created container's process", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := rt()
			if err != nil {
				return err
			}
			return r.Start(cmd.Context(), args[0])
		},
	}
	state := &cobra.Command{
		Use: "state ID", Short: "Print a container's state as the runtime spec's JSON", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := rt()
			if err != nil {
				return err
			}
			st, err := r.State(args[0])
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(st.OCI())
		},
	}
	var killAll bool
	kill := &cobra.Command{
		Use: "kill ID [SIGNAL]", Short: "Send a signal (default SIGTERM) to the container's process", Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := rt()
			if err != nil {
				return err
			}
			sig := unix.SIGTERM
			if len(args) == 2 {
				if sig, err = parseSignal(args[1]); err != nil {
					return err
				}
			}
			return r.Kill(args[0], sig, killAll)
		},
	}
	kill.Flags().BoolVarP(&killAll, "all", "a", false, "signal every process of the container")
	var force bool
	del := &cobra.Command{
		Use: "delete ID", Aliases: []string{"rm"}, Short: "Remove a stopped container (--force kills a live one)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := rt()
			if err != nil {
				return err
			}
			return r.Delete(cmd.Context(), args[0], force)
		},
	}
	del.Flags().BoolVarP(&force, "force", "f", false, "kill the container first if it runs")
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List containers", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := rt()
			if err != nil {
				return err
			}
			all, err := r.List()
			if err != nil {
				return err
			}
			return g.Print(all, func(w *tabwriter.Writer) {
				cliout.Row(w, "ID", "PID", "STATUS", "IMAGE", "IP", "CREATED")
				for _, s := range all {
					img, ip := s.Annotations[container.AnnotationImage], ""
					if img == "" {
						img = "(bundle " + s.Bundle + ")"
					}
					if s.Network != nil {
						ip = s.Network.IP
					}
					cliout.Row(w, s.ID, s.Pid, s.Status, img, ip, s.Created.Format(time.RFC3339))
				}
			})
		},
	}
	stats := &cobra.Command{
		Use: "stats ID", Short: "Print a container's resource use (memory, CPU, pids, OOM kills)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := rt()
			if err != nil {
				return err
			}
			st, err := r.Stats(args[0])
			if err != nil {
				return err
			}
			return g.Print(st, func(w *tabwriter.Writer) {
				cliout.Row(w, "MEMORY", "LIMIT", "CPU", "PIDS", "OOM KILLS")
				limit := "-"
				if st.MemoryLimitBytes > 0 {
					limit = strconv.FormatUint(st.MemoryLimitBytes, 10)
				}
				cliout.Row(w, st.MemoryBytes, limit, time.Duration(st.CPUNanos), st.Pids, st.OOMKills)
			})
		},
	}
	var execEnv []string
	var execCwd, execUser string
	var execTTY bool
	execCmd := &cobra.Command{
		Use: "exec ID -- command [args...]", Short: "Run a further process in a running container; exits with its exit code", Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := rt()
			if err != nil {
				return err
			}
			o := container.ExecOptions{Args: args[1:], Env: execEnv, Cwd: execCwd, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
			if execUser != "" {
				st, err := r.State(args[0])
				if err != nil {
					return err
				}
				u, err := container.ResolveUser(st.Rootfs, execUser)
				if err != nil {
					return err
				}
				o.User = &u
			}
			var restore func()
			if execTTY {
				o.Terminal = true
				o.OnConsole = func(console *os.File) { restore = attachTerminal(console) }
			}
			code, err := r.Exec(cmd.Context(), args[0], o)
			if restore != nil {
				restore()
			}
			if err != nil {
				return err
			}
			if code != 0 {
				return ExitCode(code)
			}
			return nil
		},
	}
	execCmd.Flags().StringArrayVarP(&execEnv, "env", "e", nil, "KEY=VALUE added to the environment (repeatable)")
	execCmd.Flags().StringVarP(&execCwd, "workdir", "w", "", "working directory (default: the container process's)")
	execCmd.Flags().StringVarP(&execUser, "user", "u", "", "user[:group], names or IDs (default: the container process's)")
	execCmd.Flags().BoolVarP(&execTTY, "tty", "t", false, "give the process a terminal from the container's /dev/pts, wired to this one")
	execCmd.Flags().BoolP("interactive", "i", true, "input is this process's (always; accepted so -it works)")
	var grace time.Duration
	stop := &cobra.Command{
		Use: "stop ID", Short: "SIGTERM the container's process, SIGKILL everything after --time", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := rt()
			if err != nil {
				return err
			}
			return r.Stop(cmd.Context(), args[0], grace)
		},
	}
	stop.Flags().DurationVarP(&grace, "time", "t", 10*time.Second, "how long to wait after SIGTERM")
	ps := &cobra.Command{
		Use: "ps ID", Short: "List a container's processes (host PIDs)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := rt()
			if err != nil {
				return err
			}
			procs, err := r.Processes(args[0])
			if err != nil {
				return err
			}
			return g.Print(procs, func(w *tabwriter.Writer) {
				cliout.Row(w, "PID", "COMMAND")
				for _, p := range procs {
					cliout.Row(w, p.Pid, p.Command)
				}
			})
		},
	}
	inspect := &cobra.Command{
		Use: "inspect ID", Short: "Print everything the runtime keeps about a container, as JSON", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := rt()
			if err != nil {
				return err
			}
			st, err := r.State(args[0])
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		},
	}
	var follow bool
	logs := &cobra.Command{
		Use: "logs ID", Short: "Print a detached container's output (run -d keeps it)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := rt()
			if err != nil {
				return err
			}
			if _, err := r.State(args[0]); err != nil {
				return err
			}
			id := args[0]
			stopped := func() bool {
				st, err := r.State(id)
				return err != nil || st.Status == container.Stopped
			}
			err = logfile.Copy(cmd.Context(), r.LogPath(id), cmd.OutOrStdout(), follow, stopped, 100*time.Millisecond)
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("no log for %s: only run -d keeps one", id)
			}
			return err
		},
	}
	logs.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the container stops")
	netCmd := &cobra.Command{Use: "network", Short: "The bridge network (--net bridge) on this host", Args: cobra.NoArgs}
	netCmd.AddCommand(&cobra.Command{
		Use: "rm", Short: "Take the bridge and its NAT and port rules off the host (refused while containers use it)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := rt()
			if err != nil {
				return err
			}
			return r.RemoveNetwork()
		},
	})
	c.AddCommand(execCmd, stop, ps, inspect, logs, netCmd)
	c.AddCommand(spec, run, create, commit, start, state, kill, del, list, stats,
		simple("pause", "Freeze every process of a container", (*container.Runtime).Pause),
		simple("resume", "Thaw a paused container", (*container.Runtime).Resume))
	return c
}

// parseSignal takes a signal as a number, "KILL" or "SIGKILL".
func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, errors.New("unknown signal " + strconv.Quote(s))
}

// imageFlags shape a container made from an image.
type imageFlags struct {
	ref, hostname, workdir, user, memory, cpus, network string
	env, ports                                          []string
	pids                                                int64
	readOnly, tty                                       bool
	seccomp                                             string
}

func (f *imageFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.ref, "image", "", "make the container from this image (tangram image ls)")
	c.Flags().StringArrayVarP(&f.env, "env", "e", nil, "KEY=VALUE added to the image's environment (repeatable)")
	c.Flags().StringVar(&f.hostname, "hostname", "", "host name (default: the container ID)")
	c.Flags().StringVarP(&f.workdir, "workdir", "w", "", "working directory (default: the image's)")
	c.Flags().StringVarP(&f.user, "user", "u", "", "user[:group], names or IDs (default: the image's)")
	c.Flags().StringVarP(&f.memory, "memory", "m", "", "memory limit, e.g. 64m or 1g (no swap beyond it)")
	c.Flags().StringVar(&f.cpus, "cpus", "", "CPU quota in CPUs, e.g. 0.5")
	c.Flags().Int64Var(&f.pids, "pids-limit", 0, "most processes at once")
	c.Flags().StringVar(&f.network, "net", "none", "network: none (own namespace, loopback only), bridge (tangram0, NAT) or host")
	c.Flags().StringArrayVarP(&f.ports, "publish", "p", nil, "publish HOST:CONTAINER[/tcp|udp] (with --net bridge; repeatable)")
	c.Flags().BoolVar(&f.readOnly, "read-only", false, "mount the root filesystem read-only")
	c.Flags().BoolVarP(&f.tty, "tty", "t", false, "give the process a terminal, wired to this one (run only)")
	c.Flags().StringVar(&f.seccomp, "seccomp", "default", "system call filter for --image: default, unconfined, or a file holding a runtime spec's linux.seccomp JSON")
	c.Flags().BoolP("interactive", "i", true, "input is this process's (always; accepted so -it works)")
}

func (f *imageFlags) options(args []string) (container.ImageOptions, error) {
	o := container.ImageOptions{Args: args, Env: f.env, Hostname: f.hostname, Workdir: f.workdir, User: f.user, ReadOnly: f.readOnly, Terminal: f.tty}
	var err error
	if o.Seccomp, err = seccompProfile(f.seccomp); err != nil {
		return o, err
	}
	switch f.network {
	case "none", "":
	case "host":
		o.NetworkHost = true
	case "bridge":
		o.Bridge = true
	default:
		return o, fmt.Errorf("--net %q: want none, bridge or host", f.network)
	}
	for _, p := range f.ports {
		port, err := network.ParsePort(p)
		if err != nil {
			return o, err
		}
		o.Ports = append(o.Ports, port)
	}
	if len(o.Ports) > 0 && !o.Bridge {
		return o, fmt.Errorf("--publish needs --net bridge")
	}
	var res specs.LinuxResources
	limited := false
	if f.memory != "" {
		n, err := parseBytes(f.memory)
		if err != nil {
			return o, fmt.Errorf("--memory: %w", err)
		}
		res.Memory = &specs.LinuxMemory{Limit: &n, Swap: &n}
		limited = true
	}
	if f.cpus != "" {
		c, err := strconv.ParseFloat(f.cpus, 64)
		if err != nil || c <= 0 || c > 1024 {
			return o, fmt.Errorf("--cpus %q: want a number of CPUs above 0", f.cpus)
		}
		quota, period := int64(c*100000), uint64(100000)
		res.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
		limited = true
	}
	if f.pids != 0 {
		if f.pids < 0 {
			return o, fmt.Errorf("--pids-limit %d: want a positive number", f.pids)
		}
		res.Pids = &specs.LinuxPids{Limit: &f.pids}
		limited = true
	}
	if limited {
		o.Resources = &res
	}
	return o, nil
}

// parseBytes reads 512, 64k, 64m, 1g (powers of 1024).
// defaultRoot is where containers' state lives: under /var/lib for root,
// under the user's runtime directory (or home) otherwise.
func defaultRoot() string {
	if os.Geteuid() == 0 {
		return container.DefaultConfig().Root
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "tangram", "containers")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "tangram", "containers")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("tangram-%d", os.Geteuid()), "containers")
}

// sendConsole hands a terminal's master to whoever listens on the unix
// socket at path, as runc's --console-socket does: one message whose data
// is the terminal's name and whose ancillary data is the descriptor.
func sendConsole(path string, console *os.File) error {
	if path == "" {
		return errors.New("the container has a terminal (process.terminal) and nothing to hand it to: give --console-socket, or use run in the foreground")
	}
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("--console-socket: %w", err)
	}
	defer conn.Close()
	if _, _, err := conn.WriteMsgUnix([]byte(console.Name()), unix.UnixRights(int(console.Fd())), nil); err != nil {
		return fmt.Errorf("--console-socket: send the terminal: %w", err)
	}
	return nil
}

// seccompProfile reads --seccomp: the default profile, none, or a file
// holding an OCI runtime spec's linux.seccomp object.
func seccompProfile(v string) (*specs.LinuxSeccomp, error) {
	switch v {
	case "default", "":
		return seccomp.Default(), nil
	case "unconfined":
		return nil, nil
	}
	b, err := os.ReadFile(v)
	if err != nil {
		return nil, fmt.Errorf("--seccomp: %w", err)
	}
	var p specs.LinuxSeccomp
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("--seccomp %s: not a runtime spec's linux.seccomp object: %w", v, err)
	}
	if _, err := seccomp.Compile(&p); err != nil {
		return nil, fmt.Errorf("--seccomp %s: %w", v, err)
	}
	return &p, nil
}

func parseBytes(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "b")
	mult := int64(1)
	switch {
	case strings.HasSuffix(t, "k"):
		mult, t = 1<<10, t[:len(t)-1]
	case strings.HasSuffix(t, "m"):
		mult, t = 1<<20, t[:len(t)-1]
	case strings.HasSuffix(t, "g"):
		mult, t = 1<<30, t[:len(t)-1]
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size such as 64m or 1g", s)
	}
	return n * mult, nil
}

// imagesOpen opens the image store at a root ("" its default), when the
// program has images (it imports cmd/internal/imagecli); imagesRoot is
// the default root.
var (
	imagesOpen func(root string) (container.Images, error)
	imagesRoot string
)

// RegisterImages gives the container commands their images: run --image,
// create --image, commit. Called by cmd/internal/imagecli's init.
func RegisterImages(defaultRoot string, open func(root string) (container.Images, error)) {
	imagesRoot, imagesOpen = defaultRoot, open
}

// ErrNoImages is what a program without the image store (tangram-oci)
// answers to an image: it runs bundles, as runc does.
var ErrNoImages = errors.New("containercli: containers from images need the image store, which this binary leaves out (it runs bundles, as runc does): use `tangram container` for images")

func openImages(root string) (container.Images, error) {
	if imagesOpen == nil {
		return nil, ErrNoImages
	}
	return imagesOpen(root)
}

// attachTerminal wires this process's terminal to a container's console:
// raw mode, input to the console, output from it, window size kept in
// step. The returned function puts the terminal back.
func attachTerminal(console *os.File) func() {
	in := int(os.Stdin.Fd())
	old, err := unix.IoctlGetTermios(in, unix.TCGETS)
	isTTY := err == nil
	if isTTY {
		raw := *old
		raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		raw.Oflag &^= unix.OPOST
		raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		raw.Cflag &^= unix.CSIZE | unix.PARENB
		raw.Cflag |= unix.CS8
		raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
		unix.IoctlSetTermios(in, unix.TCSETS, &raw)
	}
	resize := func() {
		if ws, err := unix.IoctlGetWinsize(in, unix.TIOCGWINSZ); err == nil {
			unix.IoctlSetWinsize(int(console.Fd()), unix.TIOCSWINSZ, ws)
		}
	}
	resize()
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, unix.SIGWINCH)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-winch:
				resize()
			case <-done:
				return
			}
		}
	}()
	outDone := make(chan struct{})
	go func() {
		defer wg.Done()
		defer close(outDone)
		io.Copy(os.Stdout, console) // ends with EIO when the container's side closes
	}()
	// Input is copied until this process exits: a read of a terminal
	// cannot be interrupted, and the container ending ends the command.
	go io.Copy(console, os.Stdin)
	return func() {
		signal.Stop(winch)
		close(done)
		// The process has ended: print what it wrote last, unless
		// something it left behind still holds the terminal open.
		select {
		case <-outDone:
		case <-time.After(time.Second):
		}
		console.Close()
		wg.Wait()
		if isTTY {
			unix.IoctlSetTermios(in, unix.TCSETS, old)
		}
	}
}
