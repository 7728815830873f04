package mq_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/netfault"
	"github.com/tangram-dev/tangram/mq"
	"github.com/tangram-dev/tangram/mq/broker"
	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/server"
	"github.com/tangram-dev/tangram/server/servertest"
)

// TestMasterFailoverToSyncSlave: a master with a sync slave; consumers
// are part-way through a topic when the master stops. They go on reading
// from the slave — every acknowledged message arrives, and offsets are not
// reset (only what was in flight is seen twice). When the master returns
// it learns the offsets committed on the slave, so nothing is consumed
// again.
func TestMasterFailoverToSyncSlave(t *testing.T) {
	h := servertest.Start(t, func(c *server.Config) { c.BrokerAddr = "off"; c.MQNameTTL = time.Second })
	e := &env{t: t, h: h}
	mdir := filepath.Join(t.TempDir(), "master")
	maddr := freeAddr(t)
	master := e.openBroker("m1", mdir, maddr, func(c *broker.Config) { c.SyncReplicas = true })
	e.addBroker("m1", func(c *broker.Config) { c.Master = master.Addr(); c.Token = servertest.AdminToken })
	c := e.client()
	ctx := ctxT(t, 90*time.Second)
	if err := c.CreateTopic(ctx, "ha", 2, false); err != nil {
		t.Fatal(err)
	}
	p := e.producer(c, mq.ProducerConfig{Retries: 5})
	const n = 600
	for i := 0; i < n; {
		_, err := p.Send(ctx, &mq.Message{Topic: "ha", Body: []byte(strconv.Itoa(i))})
		if err != nil {
			if i == 0 { // the slave is still connecting: sync replication refuses
				time.Sleep(50 * time.Millisecond)
				continue
			}
			t.Fatalf("send %d: %v", i, err)
		}
		i++
	}
	var mu sync.Mutex
	seen := map[string]int{}
	total := 0
	startConsumer(t, c, mq.ConsumerConfig{Group: "g", Concurrency: 1, PullBatch: 8}, "ha", nil, func(ctx context.Context, m *mq.Message) error {
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		seen[string(m.Body)]++
		total++
		mu.Unlock()
		return nil
	})
	waitFor(t, 20*time.Second, "200 consumed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return total >= 200
	})
	time.Sleep(1200 * time.Millisecond) // a commit reaches the master and the slave
	if err := master.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	atFailover := total
	mu.Unlock()
	waitFor(t, 30*time.Second, "every message, read from the slave", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == n
	})
	mu.Lock()
	dups := total - n
	mu.Unlock()
	if dups > 50 {
		t.Fatalf("%d messages consumed twice after failing over at %d: offsets went back", dups, atFailover)
	}
	// The master returns; the group's offsets from
	// the slave flow back to it, and nothing is consumed again.
	time.Sleep(1200 * time.Millisecond)
	e.openBroker("m1", mdir, maddr, func(c *broker.Config) { c.SyncReplicas = true })
	waitFor(t, 20*time.Second, "the master to know the group is done", func() bool {
		gs, err := c.Groups(ctx, "g")
		return err == nil && len(gs) == 1 && gs[0].Lag == 0 && len(gs[0].Queues) >= 2
	})
	time.Sleep(2 * time.Second)
	mu.Lock()
	defer mu.Unlock()
	if total-n > dups+10 {
		t.Fatalf("after the master came back %d more were consumed again", total-n-dups)
	}
	t.Logf("failed over after %d consumed; %d seen twice across the failover", atFailover, dups)
}

// TestReplicationPartition cuts the master–slave link (a proxy that holds
// every byte, as a dead network path does) while producers send. With
// sync replication sends fail as busy — retriable — during the cut and
// succeed again after it; with async they go on. Either way the slave
// catches up after the heal to a byte-identical commitlog.
func TestReplicationPartition(t *testing.T) {
	for _, sync := range []bool{true, false} {
		name := "async"
		if sync {
			name = "sync"
		}
		t.Run(name, func(t *testing.T) {
			h := servertest.Start(t, func(c *server.Config) { c.BrokerAddr = "off" })
			e := &env{t: t, h: h}
			master := e.addBroker("r1", func(c *broker.Config) { c.SyncReplicas = sync; c.ReplicaTimeout = 300 * time.Millisecond })
			proxy := netfault.New(t, master.Addr())
			slave := e.addBroker("r1", func(c *broker.Config) { c.Master = proxy.Addr(); c.Token = servertest.AdminToken })
			c := e.client()
			ctx := ctxT(t, 60*time.Second)
			if err := c.CreateTopic(ctx, "rep", 2, false); err != nil {
				t.Fatal(err)
			}
			p := e.producer(c, mq.ProducerConfig{Retries: -1, Timeout: 2 * time.Second})
			send := func(i int) error {
				_, err := p.Send(ctx, &mq.Message{Topic: "rep", Body: []byte(strconv.Itoa(i))})
				return err
			}
			for i := 0; i < 100; {
				if err := send(i); err != nil {
					if i == 0 { // the slave is still connecting
						time.Sleep(50 * time.Millisecond)
						continue
					}
					t.Fatal(err)
				}
				i++
			}
			proxy.Partition()
			failed, ok := 0, 0
			for i := 100; i < 110; i++ {
				if err := send(i); err != nil {
					if rpc.CodeOf(err) != rpc.ResourceExhausted {
						t.Fatalf("send during the cut: %v (want a retriable busy)", err)
					}
					failed++
				} else {
					ok++
				}
			}
			if sync && ok > 0 || !sync && failed > 0 {
				t.Fatalf("during the cut: %d sends acknowledged, %d refused", ok, failed)
			}
			proxy.Heal()
			healed := time.Now()
			waitFor(t, 20*time.Second, "sends acknowledged again", func() bool { return send(999) == nil })
			t.Logf("%d refused during the cut; acknowledged again %v after the heal", failed, time.Since(healed).Round(time.Millisecond))
			waitFor(t, 20*time.Second, "the slave to catch up", func() bool {
				return slave.Store().End() == master.Store().End()
			})
			for pos := int64(0); pos < master.Store().End(); {
				a, next, err := master.Store().ReadRaw(pos, 1<<20)
				if err != nil {
					t.Fatal(err)
				}
				b, _, err := slave.Store().ReadRaw(pos, 1<<20)
				if err != nil || !bytes.Equal(a, b) {
					t.Fatalf("commitlogs differ at %d (%v)", pos, err)
				}
				pos = next
			}
		})
	}
}
