package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/tangram-dev/tangram/internal/durable"
)

// nodeFile holds this server's node name in its data directory: chosen on
// the first start, the same after every restart. Leases are taken by node
// (and a per-process incarnation), so a restarted server takes its own
// work back at once instead of waiting for it to expire.
const nodeFile = "node-id"

// loadNodeName reads the node name kept in dir, or creates one
// ("<hostname>-<6 hex digits>") on the first start.
func loadNodeName(dir string) (string, error) {
	path := filepath.Join(dir, nodeFile)
	b, err := os.ReadFile(path)
	if err == nil {
		name := strings.TrimSpace(string(b))
		if name == "" || strings.ContainsAny(name, " \t\n/#") {
			return "", fmt.Errorf("server: %s holds %q: want one word (delete it to draw a new name)", path, name)
		}
		return name, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("server: read the node name: %w", err)
	}
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r == ' ' || r == '/' || r == '#' {
			return '-'
		}
		return r
	}, host)
	if host == "" {
		host = "node"
	}
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	name := host + "-" + hex.EncodeToString(rnd[:])
	if err := durable.WriteFile(path, []byte(name+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("server: keep the node name: %w", err)
	}
	return name, nil
}

// lockDataDir takes an exclusive lock on dir for this process: two
// servers on one data directory would share a node name (and the SQLite
// file, the broker's files). The lock goes with the process, kill -9
// included.
func lockDataDir(dir string) (release func(), err error) {
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("server: data directory lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("server: data directory %s is in use by another tangram process (one server per data directory; give this one its own --data)", dir)
		}
		return nil, fmt.Errorf("server: data directory lock: %w", err)
	}
	return func() { f.Close() }, nil
}
