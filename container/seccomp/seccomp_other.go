//go:build linux && !amd64 && !arm64

package seccomp

import (
	"fmt"
	"runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Filter is a compiled profile; this architecture has no system call
// table, so none can be compiled.
type Filter struct{ Skipped []string }

// Compile refuses: there is no system call table for this architecture.
func Compile(p *specs.LinuxSeccomp) (*Filter, error) {
	return nil, fmt.Errorf("seccomp: no system call table for %s (amd64 and arm64 have one)", runtime.GOARCH)
}

// Install is never reached: Compile refuses.
func (f *Filter) Install() error { return fmt.Errorf("seccomp: not supported on %s", runtime.GOARCH) }

// Len is 0.
func (f *Filter) Len() int { return 0 }

// Number knows no names here.
func Number(name string) (uint32, bool) { return 0, false }

// Default is nil: no profile can be built here.
func Default() *specs.LinuxSeccomp { return nil }
