// Package tangrambin gives the benchmarks that run tangram as a child
// process the binary to run and free loopback addresses for it.
package tangrambin

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
)

// Build returns bin when it is set (a binary built beforehand), else builds
// ./cmd/tangram into dir and returns its path.
func Build(dir, bin string) (string, error) { return BuildCommand(dir, bin, "tangram") }

// BuildCommand is Build for another command: ./cmd/<name>.
func BuildCommand(dir, bin, name string) (string, error) { return build(dir, bin, name) }

// BuildStatic is BuildCommand without cgo — a statically linked binary, as
// `make build` makes tangram-oci.
func BuildStatic(dir, bin, name string) (string, error) {
	return build(dir, bin, name, "CGO_ENABLED=0")
}

func build(dir, bin, name string, env ...string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	bin = filepath.Join(dir, name)
	fmt.Fprintf(os.Stderr, "building ./cmd/%s %v…\n", name, env)
	b := exec.Command("go", "build", "-o", bin, "./cmd/"+name)
	b.Env = append(os.Environ(), env...)
	b.Stderr = os.Stderr
	if err := b.Run(); err != nil {
		return "", fmt.Errorf("build ./cmd/%s: %w", name, err)
	}
	return bin, nil
}

// FreeAddr returns a loopback address no one listens on at the moment.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
