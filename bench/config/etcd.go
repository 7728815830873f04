package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// serveEtcd runs an embedded etcd (the peer) in this process, started as a
// child of the benchmark so that its memory is its own, until SIGTERM.
func serveEtcd(dir, clientURL, peerURL string) error {
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

// measureEtcd runs the same rounds against etcd (go.etcd.io/etcd, embedded
// in a child process): n watchers, each with its own client and so its own
// connection, as each config client has, watching one key; a round puts a
// new value and times each watcher's event from the start of the put.
func measureEtcd(n, rounds int, dir string) ([]result, float64, int64, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, 0, 0, err
	}
	cu, err1 := freeURL()
	pu, err2 := freeURL()
	if err1 != nil || err2 != nil {
		return nil, 0, 0, fmt.Errorf("ports: %v %v", err1, err2)
	}
	cmd := exec.Command(exe, "-serve-etcd", filepath.Join(dir, "etcd"), cu, pu)
	var errBuf bytes.Buffer // etcd logs its shutdown as errors; shown only if it fails to start
	cmd.Stderr = &errBuf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, 0, 0, err
	}
	if err := cmd.Start(); err != nil {
		return nil, 0, 0, err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		return nil, 0, 0, fmt.Errorf("etcd child: %q %v\n%s", line, err, errBuf.String())
	}
	endpoint := cu[len("http://"):]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const key = "/bench/application"
	admin, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second})
	if err != nil {
		return nil, 0, 0, err
	}
	defer admin.Close()
	if _, err := admin.Put(ctx, key, "0"); err != nil {
		return nil, 0, 0, err
	}

	var (
		mu       sync.Mutex
		arrivals = make([][]time.Time, rounds)
		created  sync.WaitGroup
		failures int64
		clients  []*clientv3.Client
		wg       sync.WaitGroup
	)
	fmt.Fprintf(os.Stderr, "opening %d etcd watchers…\n", n)
	for i := 0; i < n; i++ {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second})
		if err != nil {
			return nil, 0, 0, err
		}
		clients = append(clients, cli)
		created.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			wch := cli.Watch(ctx, key, clientv3.WithCreatedNotify())
			first := true
			for resp := range wch {
				at := time.Now()
				if first && resp.Created {
					first = false
					created.Done()
					continue
				}
				for _, ev := range resp.Events {
					r, err := strconv.Atoi(string(ev.Kv.Value))
					if err != nil || r < 1 || r > rounds {
						continue
					}
					mu.Lock()
					arrivals[r-1] = append(arrivals[r-1], at)
					mu.Unlock()
				}
			}
		}()
	}
	created.Wait()
	defer func() {
		cancel()
		for _, c := range clients {
			c.Close()
		}
		wg.Wait()
	}()
	var results []result
	for r := 0; r < rounds; r++ {
		time.Sleep(settle)
		rss := serverRSS(cmd.Process.Pid)
		srvCPU0, ownCPU0 := procCPU(cmd.Process.Pid), selfCPU()
		start := time.Now()
		if _, err := admin.Put(ctx, key, strconv.Itoa(r+1)); err != nil {
			return nil, 0, 0, err
		}
		pub := time.Since(start)
		lat := collect(&mu, &arrivals[r], n, start, 30*time.Second)
		res := newResult(n, r, lat, rss, pub)
		res.ServerCPUms, res.ClientCPUms = (procCPU(cmd.Process.Pid)-srvCPU0)*1000, (selfCPU()-ownCPU0)*1000
		results = append(results, res)
		fmt.Fprintf(os.Stderr, "etcd round %d: %d/%d notified, p99 %.1f ms, RSS %.0f MiB\n", r+1, res.Notified, n, res.P99ms, res.RSSMiB)
	}
	return results, serverHWM(cmd.Process.Pid), failures, nil
}
