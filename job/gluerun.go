package job

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// glueCode is the source a glue run carries.
type glueCode struct {
	typ     string
	version int
	source  string
}

// glueHandler returns the executor's handler for a glue type.
func (e *Executor) glueHandler(typ string) Handler {
	return func(ctx context.Context, jc *Context) error {
		g := jc.glue
		if g == nil || g.typ != typ {
			return fmt.Errorf("run carries no %s glue source", typ)
		}
		jc.Log.Info("glue", "type", typ, "version", g.version)
		switch typ {
		case GlueGo:
			return e.runGo(ctx, jc, g)
		case GluePython:
			return e.runScript(ctx, jc, g, "python3", ".py")
		default:
			return e.runScript(ctx, jc, g, "/bin/sh", ".sh")
		}
	}
}

// runScript runs a shell or Python glue in a fresh working directory, in
// its own process group with an environment of its own (PATH, HOME and
// TMPDIR in the working directory, the run's TANGRAM_* variables, and
// ExecutorConfig.GlueEnv). Its output goes to the run's log. When the run
// is killed or times out the whole group gets SIGTERM, then SIGKILL after
// GlueKillGrace; whatever the script left running in its group is killed
// when it ends, so no child outlives its run.
func (e *Executor) runScript(ctx context.Context, jc *Context, g *glueCode, interpreter, ext string) error {
	path, err := exec.LookPath(interpreter)
	if err != nil {
		return fmt.Errorf("glue %s: %w", interpreter, err)
	}
	if err := os.MkdirAll(e.cfg.GlueDir, 0o700); err != nil {
		return fmt.Errorf("glue working directory: %w", err)
	}
	dir, err := os.MkdirTemp(e.cfg.GlueDir, fmt.Sprintf("run-%d-", jc.RunID))
	if err != nil {
		return fmt.Errorf("glue working directory: %w", err)
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "glue"+ext)
	if err := os.WriteFile(file, []byte(g.source), 0o700); err != nil {
		return fmt.Errorf("glue source: %w", err)
	}
	cmd := exec.Command(path, file, jc.Params)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TMPDIR=" + dir, "LANG=C.UTF-8",
		"TANGRAM_RUN_ID=" + strconv.FormatInt(jc.RunID, 10), "TANGRAM_JOB_ID=" + strconv.FormatInt(jc.JobID, 10),
		"TANGRAM_JOB=" + jc.Job, "TANGRAM_PARAMS=" + jc.Params, "TANGRAM_ATTEMPT=" + strconv.Itoa(jc.Attempt),
		"TANGRAM_SHARD_INDEX=" + strconv.Itoa(jc.ShardIndex), "TANGRAM_SHARD_TOTAL=" + strconv.Itoa(jc.ShardTotal),
		"TANGRAM_GLUE_VERSION=" + strconv.Itoa(g.version)}, e.cfg.GlueEnv...)
	cmd.Stdout, cmd.Stderr = jc.buf, jc.buf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// After the script exits, stop waiting for output held open by a child
	// it left behind (that child is killed below).
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("glue start: %w", err)
	}
	pgid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case err = <-done:
		case <-time.After(e.cfg.GlueKillGrace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			err = <-done
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL) // the group's stragglers
	if c := context.Cause(ctx); c != nil {
		return c
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("glue exited with status %d", ee.ExitCode())
	}
	return err
}

// runGo runs a Go glue with the executor's GoInterpreter.
func (e *Executor) runGo(ctx context.Context, jc *Context, g *glueCode) error {
	type result struct {
		out string
		err error
	}
	res := make(chan result, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				res <- result{err: fmt.Errorf("glue go panicked: %v", p)}
			}
		}()
		out, err := e.cfg.GoGlue.Run(ctx, g.source, jc.Params, append([]string{"TANGRAM_PARAMS=" + jc.Params}, e.cfg.GlueEnv...), jc.buf)
		res <- result{out, err}
	}()
	select {
	case r := <-res:
		jc.Output = r.out
		return r.err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// GoInterpreter runs the source of a Go glue: a main package that defines
//
//	func Run(ctx context.Context, params string) (output string, err error)
//
// Run calls it with params, env as its environment and out as its standard
// output and error. Package job/goglue provides one (yaegi); it is apart
// from this package because an interpreter with the standard library's
// symbols weighs about 20 MB, which an executor without Go glue should not
// carry.
type GoInterpreter interface {
	Run(ctx context.Context, source, params string, env []string, out io.Writer) (output string, err error)
}

var _ io.Writer = (*runLog)(nil)
