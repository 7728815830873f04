package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tangram-dev/tangram/container/seccomp"
)

// DefaultSpec returns the configuration `runc spec` writes, with args as
// the process and rootfs as the root: PID, mount, IPC, UTS and network
// namespaces; /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue and a
// read-only /sys; runc's masked and read-only paths; the capabilities
// AUDIT_WRITE, KILL and NET_BIND_SERVICE; no_new_privs; 1024 open files;
// only the standard devices.
func DefaultSpec(rootfs string, args []string) *specs.Spec {
	caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
	return &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: rootfs},
		Process: &specs.Process{
			Args: args,
			Env:  []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"},
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
			NoNewPrivileges: true,
		},
		Hostname: "tangram",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
			},
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
				"/proc/scsi", "/sys/devices/virtual/powercap",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
		},
	}
}

// Rootless adapts a spec for a runtime that is not root, as `runc spec
// --rootless` does: a user namespace mapping uid and gid (the runtime's
// own) to root inside — the one mapping an unprivileged process may write
// — no gid= option on mounts (no other group is mapped), and no
// cgroup limits (such a runtime cannot make cgroups). Its own network
// namespace stays: loopback only, and what lets it mount /sys.
func Rootless(s *specs.Spec, uid, gid int) {
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	if !slices.ContainsFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.UserNamespace }) {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	}
	s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: uint32(uid), Size: 1}}
	s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: uint32(gid), Size: 1}}
	for i, m := range s.Mounts {
		s.Mounts[i].Options = slices.DeleteFunc(slices.Clone(m.Options), func(o string) bool { return strings.HasPrefix(o, "gid=") })
	}
	s.Linux.Resources = nil
}

// LoadSpec reads bundle/config.json. A relative root path is taken from
// the bundle, as the runtime spec says.
func LoadSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("container: read bundle config: %w", err)
	}
	s, err := decodeSpec(b)
	if err != nil {
		return nil, fmt.Errorf("container: %s/config.json is not a runtime spec: %w", bundle, err)
	}
	if s.Root != nil && s.Root.Path != "" && !filepath.IsAbs(s.Root.Path) {
		abs, err := filepath.Abs(filepath.Join(bundle, s.Root.Path))
		if err != nil {
			return nil, fmt.Errorf("container: %w", err)
		}
		s.Root.Path = abs
	}
	return s, nil
}

// WriteSpec writes s as bundle/config.json.
func WriteSpec(bundle string, s *specs.Spec) error {
	b, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return fmt.Errorf("container: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644); err != nil {
		return fmt.Errorf("container: write bundle config: %w", err)
	}
	return nil
}

// ValidateID checks a container ID: letters, digits, '_', '.', '-', at most
// 128 characters, not starting with a punctuation mark.
func ValidateID(id string) error {
	ok := len(id) > 0 && len(id) <= 128
	for i := 0; ok && i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		ok = alnum || i > 0 && (c == '_' || c == '.' || c == '-')
	}
	if !ok {
		return fmt.Errorf("container: invalid ID %q: want 1-128 letters, digits, '_', '.', '-', starting with a letter or digit", id)
	}
	return nil
}

var knownNamespaces = map[specs.LinuxNamespaceType]bool{
	specs.PIDNamespace: true, specs.NetworkNamespace: true, specs.MountNamespace: true,
	specs.IPCNamespace: true, specs.UTSNamespace: true, specs.UserNamespace: true, specs.CgroupNamespace: true,
}

// validateSpec checks what the runtime needs before it forks anything.
func validateSpec(s *specs.Spec) error {
	var errs []error
	if s.Root == nil || s.Root.Path == "" {
		errs = append(errs, errors.New("root.path is required"))
	} else if st, err := os.Stat(s.Root.Path); err != nil || !st.IsDir() {
		errs = append(errs, fmt.Errorf("root.path %s is not a directory", s.Root.Path))
	}
	if s.Process == nil || len(s.Process.Args) == 0 {
		errs = append(errs, errors.New("process.args is required"))
	} else if s.Process.Cwd != "" && !filepath.IsAbs(s.Process.Cwd) {
		errs = append(errs, fmt.Errorf("process.cwd %q must be absolute", s.Process.Cwd))
	}
	if s.Linux == nil {
		errs = append(errs, errors.New("linux section is required"))
	} else {
		seen := map[specs.LinuxNamespaceType]bool{}
		for _, ns := range s.Linux.Namespaces {
			if !knownNamespaces[ns.Type] {
				errs = append(errs, fmt.Errorf("unknown namespace type %q", ns.Type))
			}
			if seen[ns.Type] {
				errs = append(errs, fmt.Errorf("namespace %q given twice", ns.Type))
			}
			seen[ns.Type] = true
		}
		if s.Hostname != "" && !seen[specs.UTSNamespace] {
			errs = append(errs, errors.New("hostname needs a uts namespace"))
		}
		if seen[specs.UserNamespace] && len(s.Linux.UIDMappings) == 0 {
			errs = append(errs, errors.New("a user namespace needs linux.uidMappings"))
		}
		// A filter that cannot be built is refused here, at create,
		// rather than by the init.
		if s.Linux.Seccomp != nil {
			if _, err := seccomp.Compile(s.Linux.Seccomp); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if s.Hooks != nil && (len(s.Hooks.Prestart)+len(s.Hooks.CreateRuntime)+len(s.Hooks.CreateContainer)+len(s.Hooks.StartContainer)+len(s.Hooks.Poststart)+len(s.Hooks.Poststop)) > 0 {
		errs = append(errs, errors.New("hooks are not supported yet"))
	}
	for _, m := range s.Mounts {
		if !filepath.IsAbs(m.Destination) {
			errs = append(errs, fmt.Errorf("mount destination %q must be absolute", m.Destination))
		}
		for _, o := range m.Options {
			if strings.ContainsRune(o, 0) {
				errs = append(errs, fmt.Errorf("mount %s: option holds a NUL byte", m.Destination))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("container: invalid spec: %w", err)
	}
	return nil
}
