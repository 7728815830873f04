package container

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/tangram-dev/tangram/container/network"
)

// Annotations the runtime puts on containers made from images.
const (
	AnnotationImage       = "tangram.image"        // the image reference
	AnnotationImageDigest = "tangram.image.digest" // its manifest digest
	annotationOwnedBundle = "tangram.bundle"       // "owned": Delete removes the bundle
)

// ImageOptions shape a container made from an image: the process (Args
// replaces the image's command; Entrypoint, when set, its entrypoint), more
// environment, a hostname, limits.
type ImageOptions struct {
	Args       []string
	Entrypoint []string
	Env        []string
	Hostname   string
	Workdir    string
	User       string
	Resources  *specs.LinuxResources
	ReadOnly   bool
	// NetworkHost keeps the host's network namespace.
	NetworkHost bool
	// Bridge puts the container on the runtime's bridge network, with
	// Ports published.
	Bridge bool
	Ports  []network.Port
	// Terminal gives the process a pseudo-terminal (Process.Console).
	Terminal bool
	// Seccomp is the system call filter (seccomp.Default() is Docker's
	// kind of profile); nil runs the container without one.
	Seccomp *specs.LinuxSeccomp
}

// Image is an image resolved for a container: its reference and the
// digest of its manifest, its layers unpacked into directories (bottom
// first), and what of its configuration a container takes.
type Image struct {
	Ref, Digest string
	Layers      []string
	Config      ImageConfig
}

// ImageConfig is the part of an image's configuration a container uses.
type ImageConfig struct {
	Entrypoint, Cmd, Env []string
	WorkingDir, User     string
}

// Images is where containers made from images find them, and where their
// changes are committed: container/image's store, through
// container/imagesource.New. An interface so that the runtime — and a
// binary that runs bundles only — does not link the image store and its
// dependencies (their package initialisation costs every run twice: the
// runtime's process and the container's init).
type Images interface {
	// Resolve finds ref and unpacks its layers.
	Resolve(ctx context.Context, ref string) (*Image, error)
	// Commit makes image ref of base (a reference or digest) with the
	// changes in upper (an overlay upper directory) as a new layer.
	Commit(ctx context.Context, base, upper, ref, comment string) (*Image, error)
}

// bundlesDir holds the bundles the runtime makes for image containers.
func (r *Runtime) bundlesDir() string { return filepath.Join(r.cfg.Root, ".bundles") }

// CreateFromImage makes a container from an image in store: the image's
// layers, unpacked once, are overlayfs's read-only lower directories; an
// upper directory of the container's own takes every change. The spec is
// runc's default with the image's command, environment, working directory
// and user.
func (r *Runtime) CreateFromImage(ctx context.Context, id string, images Images, ref string, o ImageOptions, opts CreateOptions) (*Process, error) {
	return r.fromImage(ctx, id, images, ref, o, opts, r.CreateFromSpec)
}

// LaunchImage is CreateFromImage and Start in one step (see Launch).
func (r *Runtime) LaunchImage(ctx context.Context, id string, images Images, ref string, o ImageOptions, opts CreateOptions) (*Process, error) {
	return r.fromImage(ctx, id, images, ref, o, opts, r.Launch)
}

func (r *Runtime) fromImage(ctx context.Context, id string, images Images, ref string, o ImageOptions, opts CreateOptions,
	create func(context.Context, string, string, *specs.Spec, CreateOptions) (*Process, error)) (_ *Process, err error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	img, err := images.Resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	layers := img.Layers
	bundle := filepath.Join(r.bundlesDir(), id)
	if err := os.MkdirAll(r.bundlesDir(), 0o711); err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	if err := os.Mkdir(bundle, 0o711); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("%w: %s", ErrExists, id)
		}
		return nil, fmt.Errorf("container: %w", err)
	}
	rootfs := filepath.Join(bundle, "rootfs")
	mounted := false
	defer func() {
		if err != nil {
			if mounted {
				unix.Unmount(rootfs, unix.MNT_DETACH)
			}
			os.RemoveAll(bundle)
		}
	}()
	for _, d := range []string{"upper", "work", "rootfs"} {
		if err := os.Mkdir(filepath.Join(bundle, d), 0o755); err != nil {
			return nil, fmt.Errorf("container: %w", err)
		}
	}
	if err := mountOverlay(layers, filepath.Join(bundle, "upper"), filepath.Join(bundle, "work"), rootfs); err != nil {
		return nil, err
	}
	mounted = true

	cfg := img.Config
	args := append([]string{}, cfg.Entrypoint...)
	if o.Entrypoint != nil {
		args = append([]string{}, o.Entrypoint...)
	}
	if len(o.Args) > 0 {
		args = append(args, o.Args...)
	} else if o.Entrypoint == nil {
		args = append(args, cfg.Cmd...)
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("container: image %s names no command: give one", img.Ref)
	}
	spec := DefaultSpec(rootfs, args)
	env := cfg.Env
	if len(env) == 0 {
		env = spec.Process.Env
	}
	spec.Process.Env = append(append([]string{}, env...), o.Env...)
	if cfg.WorkingDir != "" {
		spec.Process.Cwd = cfg.WorkingDir
	}
	if o.Workdir != "" {
		spec.Process.Cwd = o.Workdir
	}
	user := cfg.User
	if o.User != "" {
		user = o.User
	}
	if user != "" {
		u, err := resolveUser(rootfs, user)
		if err != nil {
			return nil, err
		}
		spec.Process.User = u
	}
	if o.Hostname != "" {
		spec.Hostname = o.Hostname
	} else {
		spec.Hostname = id
		if len(spec.Hostname) > 63 {
			spec.Hostname = spec.Hostname[:63]
		}
	}
	if o.Resources != nil {
		res := *o.Resources
		res.Devices = spec.Linux.Resources.Devices
		spec.Linux.Resources = &res
	}
	spec.Root.Readonly = o.ReadOnly
	spec.Process.Terminal = o.Terminal
	spec.Linux.Seccomp = o.Seccomp
	if o.NetworkHost {
		ns := spec.Linux.Namespaces[:0]
		for _, n := range spec.Linux.Namespaces {
			if n.Type != specs.NetworkNamespace {
				ns = append(ns, n)
			}
		}
		spec.Linux.Namespaces = ns
	}
	spec.Annotations = map[string]string{AnnotationImage: img.Ref, AnnotationImageDigest: img.Digest, annotationOwnedBundle: "owned"}
	if o.Bridge {
		if o.NetworkHost {
			return nil, errors.New("container: a bridge network and the host's network exclude each other")
		}
		spec.Annotations[AnnotationNetwork] = "bridge"
		var ps []string
		for _, p := range o.Ports {
			ps = append(ps, fmt.Sprintf("%d:%d/%s", p.HostPort, p.ContainerPort, p.Protocol))
		}
		spec.Annotations[AnnotationPorts] = strings.Join(ps, ",")
	} else if len(o.Ports) > 0 {
		return nil, errors.New("container: publishing ports needs the bridge network")
	}
	if err := WriteSpec(bundle, spec); err != nil {
		return nil, err
	}
	return create(ctx, id, bundle, spec, opts)
}

// mountOverlay stacks layers (lowest first) under upper at target.
func mountOverlay(layers []string, upper, work, target string) error {
	if len(layers) == 0 {
		// An image without layers: an empty lower directory.
		empty := filepath.Join(filepath.Dir(upper), "empty")
		if err := os.MkdirAll(empty, 0o755); err != nil {
			return fmt.Errorf("container: %w", err)
		}
		layers = []string{empty}
	}
	lower := make([]string, 0, len(layers))
	for i := len(layers) - 1; i >= 0; i-- {
		if strings.ContainsAny(layers[i], ":,") {
			return fmt.Errorf("container: layer path %q holds ':' or ',' (overlayfs option separators)", layers[i])
		}
		lower = append(lower, layers[i])
	}
	opts := "lowerdir=" + strings.Join(lower, ":") + ",upperdir=" + upper + ",workdir=" + work
	if len(opts) > os.Getpagesize()-1 {
		return fmt.Errorf("container: %d layers make overlayfs options longer than a page", len(layers))
	}
	if err := unix.Mount("overlay", target, "overlay", 0, opts); err != nil {
		return fmt.Errorf("container: mount overlay of %d layers: %w", len(layers), err)
	}
	return nil
}

// releaseBundle unmounts and removes a bundle the runtime made.
func (r *Runtime) releaseBundle(st *State) error {
	if st.Annotations[annotationOwnedBundle] != "owned" {
		return nil
	}
	if filepath.Dir(st.Bundle) != r.bundlesDir() {
		return fmt.Errorf("container: %s: owned bundle %s is outside %s", st.ID, st.Bundle, r.bundlesDir())
	}
	rootfs := filepath.Join(st.Bundle, "rootfs")
	if err := unix.Unmount(rootfs, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("container: unmount %s: %w", rootfs, err)
	}
	if err := os.RemoveAll(st.Bundle); err != nil {
		return fmt.Errorf("container: remove bundle: %w", err)
	}
	return nil
}

// Commit records a container's changes — its overlay upper directory — as
// a new layer on its image, named ref. A running container is paused
// while its changes are read.
func (r *Runtime) Commit(ctx context.Context, id string, images Images, ref, comment string) (*Image, error) {
	st, err := r.State(id)
	if err != nil {
		return nil, err
	}
	base := st.Annotations[AnnotationImageDigest]
	if base == "" {
		return nil, fmt.Errorf("container: %s was not made from an image: nothing to commit onto", id)
	}
	if st.Status == Running {
		if err := r.Pause(id); err == nil {
			defer r.Resume(id)
		}
	}
	img, err := images.Commit(ctx, base, filepath.Join(st.Bundle, "upper"), ref, comment)
	if err != nil {
		return nil, fmt.Errorf("container: commit %s: %w", id, err)
	}
	return img, nil
}

// ResolveUser turns "uid", "uid:gid", "name" or "name:group" into the IDs
// of a user of the root filesystem rootfs (its /etc/passwd and /etc/group).
func ResolveUser(rootfs, user string) (specs.User, error) { return resolveUser(rootfs, user) }

// resolveUser turns "uid", "uid:gid", "name" or "name:group" into IDs,
// looking names up in the container's /etc/passwd and /etc/group.
func resolveUser(rootfs, user string) (specs.User, error) {
	name, group, hasGroup := strings.Cut(user, ":")
	var u specs.User
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		u.UID = uint32(n)
		if e, ok := lookup(rootfs, "etc/passwd", func(f []string) bool { return f[2] == name }); ok && len(e) > 3 {
			if g, err := strconv.ParseUint(e[3], 10, 32); err == nil {
				u.GID = uint32(g)
			}
		}
	} else {
		e, ok := lookup(rootfs, "etc/passwd", func(f []string) bool { return f[0] == name })
		if !ok || len(e) < 4 {
			return u, fmt.Errorf("container: user %q is not in the image's /etc/passwd", name)
		}
		uid, err1 := strconv.ParseUint(e[2], 10, 32)
		gid, err2 := strconv.ParseUint(e[3], 10, 32)
		if err1 != nil || err2 != nil {
			return u, fmt.Errorf("container: user %q has a bad /etc/passwd entry", name)
		}
		u.UID, u.GID = uint32(uid), uint32(gid)
	}
	if hasGroup {
		if g, err := strconv.ParseUint(group, 10, 32); err == nil {
			u.GID = uint32(g)
		} else {
			e, ok := lookup(rootfs, "etc/group", func(f []string) bool { return f[0] == group })
			if !ok || len(e) < 3 {
				return u, fmt.Errorf("container: group %q is not in the image's /etc/group", group)
			}
			g, err := strconv.ParseUint(e[2], 10, 32)
			if err != nil {
				return u, fmt.Errorf("container: group %q has a bad /etc/group entry", group)
			}
			u.GID = uint32(g)
		}
	}
	return u, nil
}

// lookup finds the first colon-separated line of a file in the rootfs
// that match accepts.
func lookup(rootfs, file string, match func([]string) bool) ([]string, bool) {
	p, err := secureJoin(rootfs, file)
	if err != nil {
		return nil, false
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 3 && match(fields) {
			return fields, true
		}
	}
	return nil, false
}
