package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tangram-dev/tangram/bench/internal/etcdpeer"
)

// measureEtcd runs the same rounds against etcd (go.etcd.io/etcd, embedded
// in a child process): n watchers, each with its own client and so its own
// connection, as each config client has, watching one key; a round puts a
// new value and times each watcher's event from the start of the put.
func measureEtcd(n, rounds int, dir string) ([]result, float64, int64, error) {
	peer, err := etcdpeer.Start("-serve-etcd", filepath.Join(dir, "etcd"))
	if err != nil {
		return nil, 0, 0, err
	}
	defer peer.Stop()
	endpoint, pid := peer.Endpoint, peer.PID()
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
		runtime.GC() // as before our rounds: this process's garbage collected before each publish
		rss := serverRSS(pid)
		srvCPU0, ownCPU0 := procCPU(pid), selfCPU()
		start := time.Now()
		if _, err := admin.Put(ctx, key, strconv.Itoa(r+1)); err != nil {
			return nil, 0, 0, err
		}
		pub := time.Since(start)
		lat := collect(&mu, &arrivals[r], n, start, 30*time.Second)
		res := newResult(n, r, lat, rss, pub)
		res.ServerCPUms, res.ClientCPUms = (procCPU(pid)-srvCPU0)*1000, (selfCPU()-ownCPU0)*1000
		results = append(results, res)
		fmt.Fprintf(os.Stderr, "etcd round %d: %d/%d notified, p99 %.1f ms, RSS %.0f MiB\n", r+1, res.Notified, n, res.P99ms, res.RSSMiB)
	}
	return results, serverHWM(pid), failures, nil
}
