// Package goglue runs the Go glue of job executors with the yaegi
// interpreter and the standard library. Set it in job.ExecutorConfig.GoGlue
// to let an executor run glue of type "go":
//
//	ex, err := job.NewExecutor(job.ExecutorConfig{..., Glue: []string{job.GlueGo}, GoGlue: goglue.Interpreter{}})
//
// A Go glue shares the executor's process: it must return when its context
// ends (the run is reported killed at once either way).
package goglue

import (
	"context"
	"fmt"
	"io"

	"github.com/traefik/yaegi/interp"
	"github.com/traefik/yaegi/stdlib"

	"github.com/tangram-dev/tangram/job"
)

// Interpreter is a job.GoInterpreter: each run gets a fresh interpreter.
type Interpreter struct{}

var _ job.GoInterpreter = Interpreter{}

// Run interprets source and calls its main.Run with params.
func (Interpreter) Run(ctx context.Context, source, params string, env []string, out io.Writer) (string, error) {
	i := interp.New(interp.Options{Stdout: out, Stderr: out, Env: env})
	if err := i.Use(stdlib.Symbols); err != nil {
		return "", fmt.Errorf("glue go: %w", err)
	}
	if _, err := i.EvalWithContext(ctx, source); err != nil {
		return "", fmt.Errorf("glue go: %w", err)
	}
	v, err := i.EvalWithContext(ctx, "main.Run")
	if err != nil {
		return "", fmt.Errorf("glue go: no main.Run: %w", err)
	}
	fn, ok := v.Interface().(func(context.Context, string) (string, error))
	if !ok {
		return "", fmt.Errorf("glue go: main.Run is %s, want func(context.Context, string) (string, error)", v.Type())
	}
	return fn(ctx, params)
}
