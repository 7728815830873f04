// Package redistest gives tests the three Redis deployments the
// packages that speak RESP must work on: Tangram's kv (an in-process
// server on 127.0.0.1:0), the real Redis the machine runs
// (TANGRAM_TEST_REDIS, default 127.0.0.1:6379) and a Redis Cluster of
// masters started from the installed redis-server on free loopback ports.
package redistest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tangram-dev/tangram/internal/wait"
	kvserver "github.com/tangram-dev/tangram/kv/server"
)

// KV starts an in-memory kv server for the test and returns a client on it.
func KV(t testing.TB) *redis.Client {
	t.Helper()
	_, c := KVServer(t)
	return c
}

// KVServer is KV with the server, for tests that stop it.
func KVServer(t testing.TB) (*kvserver.Server, *redis.Client) {
	t.Helper()
	cfg := kvserver.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	s, err := kvserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	return s, c
}

// RedisAddr is the real Redis the tests use.
func RedisAddr() string {
	if a := os.Getenv("TANGRAM_TEST_REDIS"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// Redis returns a client on the real Redis (database db), failing the
// test with how to start it when it is not reachable. Tests sharing it
// keep to keys of their own (a prefix per test).
func Redis(t testing.TB, db int) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: RedisAddr(), DB: db})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		t.Fatalf("Redis at %s is not reachable (%v); start it with scripts/services.sh or set TANGRAM_TEST_REDIS", RedisAddr(), err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Prefix is a key prefix unique to this test run.
func Prefix(t testing.TB) string {
	return fmt.Sprintf("test:%s:%x:", strings.ReplaceAll(t.Name(), "/", "."), rand.Uint64())
}

// Node is one redis-server process of a Cluster.
type Node struct {
	Addr string
	cmd  *exec.Cmd
}

// Kill kills the node (SIGKILL) and waits for it.
func (n *Node) Kill() {
	if n.cmd.ProcessState == nil {
		_ = n.cmd.Process.Kill()
		_ = n.cmd.Wait()
	}
}

// Pause stops (SIGSTOP) or resumes (SIGCONT) the node.
func (n *Node) Pause(stop bool) {
	sig := syscall.SIGCONT
	if stop {
		sig = syscall.SIGSTOP
	}
	_ = n.cmd.Process.Signal(sig)
}

// Cluster starts a Redis Cluster of masters (16384 slots split evenly,
// no replicas unless replicas > 0: then each master gets that many
// replicas) and returns its nodes, masters first, and a cluster client.
func Cluster(t testing.TB, masters, replicas int) ([]*Node, *redis.ClusterClient) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is not installed (scripts/services.sh installs it): %v", err)
	}
	dir := t.TempDir()
	var nodes []*Node
	for i := 0; i < masters*(1+replicas); i++ {
		port := freePortPair(t)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--protected-mode", "no",
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes-"+strconv.Itoa(port)+".conf"),
			"--cluster-node-timeout", "1000", "--dir", dir, "--save", "", "--appendonly", "no",
			"--logfile", filepath.Join(dir, "redis-"+strconv.Itoa(port)+".log"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		n := &Node{Addr: addr, cmd: cmd}
		nodes = append(nodes, n)
		t.Cleanup(n.Kill)
	}
	ctx := context.Background()
	clients := make([]*redis.Client, len(nodes))
	for i, n := range nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: n.Addr})
		defer clients[i].Close()
		c := clients[i]
		wait.For(t, 10*time.Second, "redis-server "+n.Addr+" up", func() bool { return c.Ping(ctx).Err() == nil })
	}
	per := 16384 / masters
	for i := 0; i < masters; i++ {
		lo, hi := i*per, (i+1)*per-1
		if i == masters-1 {
			hi = 16383
		}
		if err := clients[i].ClusterAddSlotsRange(ctx, lo, hi).Err(); err != nil {
			t.Fatalf("cluster addslotsrange on %s: %v", nodes[i].Addr, err)
		}
	}
	for i := 1; i < len(nodes); i++ {
		host, port, _ := net.SplitHostPort(nodes[i].Addr)
		if err := clients[0].ClusterMeet(ctx, host, port).Err(); err != nil {
			t.Fatalf("cluster meet %s: %v", nodes[i].Addr, err)
		}
	}
	wait.For(t, 20*time.Second, "every node knows every other", func() bool {
		for _, c := range clients {
			ns, err := c.ClusterNodes(ctx).Result()
			if err != nil || strings.Count(strings.TrimSpace(ns), "\n")+1 != len(nodes) {
				return false
			}
		}
		return true
	})
	for r := 0; r < replicas; r++ {
		for m := 0; m < masters; m++ {
			id, err := clients[m].ClusterMyID(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			if err := clients[masters+m*replicas+r].ClusterReplicate(ctx, id).Err(); err != nil {
				t.Fatalf("cluster replicate: %v", err)
			}
		}
	}
	wait.For(t, 20*time.Second, "cluster_state:ok on every node", func() bool {
		for _, c := range clients {
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
		}
		return true
	})
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.Addr
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	wait.For(t, 10*time.Second, "a cluster client reaches every slot", func() bool {
		for i := 0; i < 64; i++ {
			if cc.Set(ctx, fmt.Sprintf("probe-%d", i), "1", time.Second).Err() != nil {
				return false
			}
		}
		return true
	})
	t.Cleanup(func() { _ = cc.Close() })
	return nodes, cc
}

// freePortPair finds a port p with p and p+10000 (the cluster bus) free.
func freePortPair(t testing.TB) int {
	for range 200 {
		p := 20000 + rand.IntN(20000)
		a, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		b, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+10000)))
		_ = a.Close()
		if err != nil {
			continue
		}
		_ = b.Close()
		return p
	}
	t.Fatal("no free port pair for redis-server")
	return 0
}
