package containercli

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
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tangram-dev/tangram/container"
	"github.com/tangram-dev/tangram/container/logfile"
)

// A detached container asked to be removed when it ends (run -d --rm) or
// to have its log rotated (--log-max-size) needs a process that outlives
// the command: its monitor, this binary started again with the job in
// monitorEnv. The monitor launches the container (so it is its parent and
// learns its exit code), copies its output into the rotating log, records
// the exit code in the container's state, and deletes the container if
// asked — then exits. Without those flags no process stays behind: the
// container writes its log file itself.
const monitorEnv = "_TANGRAM_CONTAINER_MONITOR"

// monitorJob is what the command hands its monitor.
type monitorJob struct {
	Root, Images string
	ID           string
	Bundle       string // absolute; or Image
	Image        string
	ImageOptions container.ImageOptions
	PidFile      string
	Remove       bool
	LogMaxSize   int64
	LogMaxFiles  int
}

func init() {
	// The monitor is caught before main, as the container package's
	// init is: the binary may be tangram, tangram-oci or a test.
	if v := os.Getenv(monitorEnv); v != "" {
		os.Unsetenv(monitorEnv)
		os.Exit(monitorMain(v, os.NewFile(3, "status")))
	}
}

// spawnMonitor starts the monitor and waits for it to report the
// container started (or why it did not).
func spawnMonitor(ctx context.Context, job monitorJob) error {
	b, err := json.Marshal(job)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this program to start the monitor: %w", err)
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer statusR.Close()
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		statusW.Close()
		return err
	}
	defer devnull.Close()
	cmd := exec.Command(exe, "container-monitor", job.ID)
	cmd.Env = append(os.Environ(), monitorEnv+"="+string(b))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
	cmd.ExtraFiles = []*os.File{statusW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // apart from this terminal's signals
	err = cmd.Start()
	statusW.Close()
	if err != nil {
		return fmt.Errorf("start the container's monitor: %w", err)
	}
	type reply struct {
		line string
		err  error
	}
	got := make(chan reply, 1)
	go func() {
		line, err := bufio.NewReader(statusR).ReadString('\n')
		got <- reply{line, err}
	}()
	var rep reply
	select {
	case rep = <-got:
	case <-ctx.Done():
		cmd.Process.Kill()
		cmd.Wait()
		return ctx.Err()
	}
	switch {
	case rep.line == "ok\n":
		return cmd.Process.Release()
	case strings.HasPrefix(rep.line, "error: "):
		cmd.Wait()
		return errors.New(strings.TrimSuffix(strings.TrimPrefix(rep.line, "error: "), "\n"))
	default:
		werr := cmd.Wait()
		return fmt.Errorf("the container's monitor ended before reporting (%v, %v)", rep.err, werr)
	}
}

// monitorMain is the monitor process; it returns its exit status.
func monitorMain(v string, status *os.File) int {
	report := func(msg string) {
		if status != nil {
			status.WriteString(msg + "\n")
			status.Close()
			status = nil
		}
	}
	// A monitor idles beside its container: keep its heap small.
	debug.SetGCPercent(25)
	runtime.GOMAXPROCS(1)
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	var job monitorJob
	if err := json.Unmarshal([]byte(v), &job); err != nil {
		report("error: monitor job: " + err.Error())
		return 1
	}
	p, log, r, err := monitorLaunch(job)
	if err != nil {
		report("error: " + strings.ReplaceAll(err.Error(), "\n", " "))
		return 1
	}
	report("ok")
	p.wait(log)
	if job.Remove {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := r.Delete(ctx, job.ID, true); err != nil && !errors.Is(err, container.ErrNotFound) {
			return 1
		}
	}
	return 0
}

// monitored is a launched container and the pipe its output comes from.
type monitored struct {
	p   *container.Process
	out *os.File
}

// wait copies the output into log until the container and everything
// holding its output have ended, and records the exit code (Wait does).
func (m monitored) wait(log *logfile.Writer) {
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		io.Copy(log, m.out)
	}()
	m.p.Wait()
	// The container's processes end with its PID 1; a process that
	// escaped it could keep the pipe open: stop copying after a while.
	select {
	case <-copied:
	case <-time.After(5 * time.Second):
		m.out.Close()
		<-copied
	}
	log.Close()
}

func monitorLaunch(job monitorJob) (monitored, *logfile.Writer, *container.Runtime, error) {
	r, err := container.New(container.Config{Root: job.Root, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return monitored{}, nil, nil, err
	}
	if err := container.ValidateID(job.ID); err != nil {
		return monitored{}, nil, nil, err
	}
	path := r.LogPath(job.ID)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return monitored{}, nil, nil, err
	}
	files := job.LogMaxFiles
	if job.LogMaxSize <= 0 {
		files = 1
	}
	log, err := logfile.Open(path, job.LogMaxSize, files)
	if err != nil {
		return monitored{}, nil, nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		log.Close()
		return monitored{}, nil, nil, err
	}
	opts := container.CreateOptions{Stdout: pw, Stderr: pw}
	ctx := context.Background()
	var p *container.Process
	if job.Image == "" {
		var spec *specs.Spec
		if spec, err = container.LoadSpec(job.Bundle); err == nil {
			p, err = r.Launch(ctx, job.ID, job.Bundle, spec, opts)
		}
	} else {
		var s container.Images
		if s, err = openImages(job.Images); err == nil {
			p, err = r.LaunchImage(ctx, job.ID, s, job.Image, job.ImageOptions, opts)
		}
	}
	pw.Close()
	if err == nil && job.PidFile != "" {
		if err = os.WriteFile(job.PidFile, []byte(fmt.Sprint(p.Pid)), 0o644); err != nil {
			r.Delete(ctx, job.ID, true)
		}
	}
	if err != nil {
		pr.Close()
		log.Close()
		return monitored{}, nil, nil, err
	}
	if p.Console != nil {
		p.Console.Close()
	}
	return monitored{p, pr}, log, r, nil
}
