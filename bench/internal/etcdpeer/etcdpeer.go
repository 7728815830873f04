// Package etcdpeer runs etcd (go.etcd.io/etcd/server/v3, embedded) as the
// peer of a benchmark, in a child process of the benchmark so that its CPU
// and memory are its own. The benchmark binary calls Serve when started with
// the child flag, and Start to launch that child.
package etcdpeer

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // the child's optional debug listener
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Options are the peer's settings beyond etcd's defaults.
type Options struct {
	// NoFsync runs etcd with UnsafeNoFsync: raft and its WAL without
	// fsync, the nearest etcd comes to a memory-only registry.
	NoFsync bool
	// DebugAddr, when set, serves net/http/pprof there (the benchmarks
	// read the live heap after a forced GC from /debug/pprof/heap).
	DebugAddr string
}

func (o Options) args() []string {
	a := []string{"fsync"}
	if o.NoFsync {
		a[0] = "nofsync"
	}
	return append(a, o.DebugAddr)
}

// Serve runs an embedded etcd in this process until SIGTERM; it prints
// "ready" once etcd serves. rest are the arguments Start passed after the
// URLs (the Options).
func Serve(dir, clientURL, peerURL string, rest ...string) error {
	var o Options
	if len(rest) > 0 {
		o.NoFsync = rest[0] == "nofsync"
	}
	if len(rest) > 1 && rest[1] != "" {
		o.DebugAddr = rest[1]
		ln, err := net.Listen("tcp", o.DebugAddr)
		if err != nil {
			return err
		}
		go func() { _ = http.Serve(ln, nil) }() // net/http/pprof's handlers; ends with the process
	}
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cu, err := url.Parse(clientURL)
	if err != nil {
		return err
	}
	pu, err := url.Parse(peerURL)
	if err != nil {
		return err
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.UnsafeNoFsync = o.NoFsync
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		return fmt.Errorf("etcd not ready")
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	select {
	case <-sig:
	case err := <-e.Err():
		return err
	}
	return nil
}

func freeURL() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return "http://" + ln.Addr().String(), nil
}

// Peer is a running etcd child.
type Peer struct {
	// Endpoint is the client address (host:port).
	Endpoint string
	cmd      *exec.Cmd
}

// Start runs this executable with childFlag (the flag that makes it call
// Serve with the three arguments that follow) and waits for etcd to serve.
func Start(childFlag, dir string, opts ...Options) (*Peer, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cu, err1 := freeURL()
	pu, err2 := freeURL()
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("etcdpeer: ports: %v %v", err1, err2)
	}
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	cmd := exec.Command(exe, append([]string{childFlag, dir, cu, pu}, o.args()...)...)
	var errBuf bytes.Buffer // etcd logs its shutdown as errors; shown only if it fails to start
	cmd.Stderr = &errBuf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("etcdpeer: child: %q %v\n%s", line, err, errBuf.String())
	}
	return &Peer{Endpoint: cu[len("http://"):], cmd: cmd}, nil
}

// PID is the child's process id (for reading its memory from /proc).
func (p *Peer) PID() int { return p.cmd.Process.Pid }

// Stop ends the child and waits for it.
func (p *Peer) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.cmd.Wait()
}
