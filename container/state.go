package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tangram-dev/tangram/container/network"
)

// Status is a container's life stage, as the runtime spec names them, plus
// paused (frozen by its cgroup).
type Status string

const (
	Creating Status = "creating"
	Created  Status = "created"
	Running  Status = "running"
	Paused   Status = "paused"
	Stopped  Status = "stopped"
)

// State is what the runtime keeps of a container in <root>/<id>/state.json
// — the runtime spec's state plus what the runtime needs to find it again
// after a restart: the init's start time (so a reused PID is not taken for
// it) and its cgroup.
type State struct {
	OCIVersion  string            `json:"ociVersion"`
	ID          string            `json:"id"`
	Status      Status            `json:"status"`
	Pid         int               `json:"pid,omitempty"`
	Bundle      string            `json:"bundle"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Rootfs      string            `json:"rootfs"`
	Cgroup      string            `json:"cgroup"`
	Created     time.Time         `json:"created"`
	// InitStart is the init's start time in clock ticks since boot
	// (/proc/<pid>/stat field 22).
	InitStart uint64 `json:"init_start,omitempty"`
	// ExitCode is known when this runtime waited for the process (run).
	ExitCode *int `json:"exit_code,omitempty"`
	// Network is the container's place on the bridge, when it has one.
	Network *network.Endpoint `json:"network,omitempty"`
}

// OCI returns the state in the runtime spec's shape (what `state` prints).
func (s State) OCI() specs.State {
	return specs.State{Version: s.OCIVersion, ID: s.ID, Status: specs.ContainerState(s.Status), Pid: s.Pid, Bundle: s.Bundle, Annotations: s.Annotations}
}

// writeState replaces state.json atomically (a rename): a runtime killed
// at any moment leaves the old state or the new one. It does not fsync: a
// host that crashes takes its containers with it, so state that outlives
// only the runtime process (kept in the page cache) is enough.
func writeState(dir string, st *State) error {
	b, err := encodeState(st)
	if err != nil {
		return fmt.Errorf("container: %w", err)
	}
	tmp := filepath.Join(dir, "state.json.tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("container: write state: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("container: write state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("container: write state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "state.json")); err != nil {
		return fmt.Errorf("container: write state: %w", err)
	}
	return nil
}

func readState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, err
	}
	st, err := decodeState(b)
	if err != nil {
		return nil, fmt.Errorf("container: state %s is corrupt: %w", dir, err)
	}
	return st, nil
}

// procStart reads a process's start time and whether it is a zombie or
// dead. ok is false when there is no such process.
func procStart(pid int) (start uint64, dead bool, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false, false
	}
	// The command name is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false, false
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); start time is field 22 → f[19].
	if len(f) < 20 {
		return 0, false, false
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, false, false
	}
	return start, f[0] == "Z" || f[0] == "X", true
}

// alive reports whether the state's init still runs (and is the same
// process, not a reused PID).
func (s *State) alive() bool {
	if s.Pid <= 0 {
		return false
	}
	start, dead, ok := procStart(s.Pid)
	return ok && !dead && start == s.InitStart
}

var errNoState = errors.New("container: no such container")
