package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/registry"

	"github.com/hashicorp/memberlist"
)

// faults is a shared partition table: traffic between two zones is cut
// while cut[zone pair] is set. Each server's transport drops what it would
// send across a cut (packets vanish, dials time out) — a network partition
// without network namespaces.
type faults struct {
	cutDials atomic.Int64 // dials refused by a cut
	mu       sync.Mutex
	zoneOf   map[string]string // gossip address → zone
	cut      map[[2]string]bool
	conns    map[*cutConn]struct{} // open streams, closed when a cut falls between their ends
}

// cutConn is a stream dialled through a fault transport; a cut closes it,
// so a push/pull exchange begun before the cut cannot carry state made
// after it.
type cutConn struct {
	net.Conn
	from, to string
	f        *faults
}

func (c *cutConn) Close() error {
	c.f.mu.Lock()
	delete(c.f.conns, c)
	c.f.mu.Unlock()
	return c.Conn.Close()
}

func (f *faults) blocked(from, to string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.blockedLocked(from, to)
}

func (f *faults) blockedLocked(from, to string) bool {
	a, b := f.zoneOf[from], f.zoneOf[to]
	if a == b {
		return false
	}
	if a > b {
		a, b = b, a
	}
	return f.cut[[2]string{a, b}]
}

func (f *faults) set(cut bool, zones ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range zones {
		for j := range zones {
			if zones[i] < zones[j] {
				f.cut[[2]string{zones[i], zones[j]}] = cut
			}
		}
	}
	for c := range f.conns {
		if f.blockedLocked(c.from, c.to) {
			delete(f.conns, c)
			c.Conn.Close()
		}
	}
}

type faultTransport struct {
	*memberlist.NetTransport
	self string
	f    *faults
}

var errCut = errors.New("partitioned")

func (t *faultTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.f.blocked(t.self, addr) {
		return time.Now(), nil // sent into the void
	}
	return t.NetTransport.WriteTo(b, addr)
}

func (t *faultTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.f.blocked(t.self, addr) {
		t.f.cutDials.Add(1)
		time.Sleep(min(timeout, 200*time.Millisecond)) // sleep-ok: a cut link times out instead of refusing
		return nil, errCut
	}
	conn, err := t.NetTransport.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	c := &cutConn{Conn: conn, from: t.self, to: addr, f: t.f}
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	if t.f.blockedLocked(t.self, addr) { // cut while dialling
		conn.Close()
		return nil, errCut
	}
	t.f.conns[c] = struct{}{}
	return c, nil
}

// memberlist uses the address-aware calls when the transport has them (as
// the embedded NetTransport does), so those must be filtered too.
func (t *faultTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *faultTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

type node struct {
	r    *Registry
	addr string
	zone string
}

// cluster starts one registry per zone entry, gossiping over loopback
// through fault transports, all joined to the first.
func cluster(t *testing.T, zones []string) ([]*node, *faults) {
	t.Helper()
	f := &faults{zoneOf: map[string]string{}, cut: map[[2]string]bool{}, conns: map[*cutConn]struct{}{}}
	var nodes []*node
	for i, z := range zones {
		var join []string
		if len(nodes) > 0 {
			join = []string{nodes[0].addr}
		}
		nodes = append(nodes, startNode(t, f, z, i, join))
	}
	wait.For(t, 10*time.Second, "all members see each other", func() bool {
		for _, n := range nodes {
			if len(n.r.Members()) != len(nodes) {
				return false
			}
		}
		return true
	})
	return nodes, f
}

// startNode starts one gossiping registry in zone z behind f.
func startNode(t *testing.T, f *faults, z string, i int, join []string) *node {
	t.Helper()
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: 0,
		Logger: log.New(io.Discard, "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(nt.GetAutoBindPort()))
	f.mu.Lock()
	f.zoneOf[addr] = z
	f.mu.Unlock()
	gc := GossipConfig{BindAddr: addr, Fast: true, PushPullInterval: 500 * time.Millisecond,
		RejoinInterval: 200 * time.Millisecond, Transport: &faultTransport{NetTransport: nt, self: addr, f: f}, Join: join}
	r, err := New(Config{Logger: quiet(), NodeName: fmt.Sprintf("%s-%d", z, i),
		HeartbeatInterval: 100 * time.Millisecond, UnhealthyAfter: time.Second, RemoveAfter: 3 * time.Second, // slack for a loaded machine: the renewer runs every 50 ms
		DisableSelfPreservation: true, Gossip: gc})
	if err != nil {
		t.Fatal(err)
	}
	must(t, r.Start(context.Background()))
	t.Cleanup(func() { r.Close() })
	return &node{r: r, addr: addr, zone: z}
}

// TestJoinRetried: a server whose --join peer cannot be reached at start
// keeps trying, and the two form a cluster once the way is open.
func TestJoinRetried(t *testing.T) {
	f := &faults{zoneOf: map[string]string{}, cut: map[[2]string]bool{}, conns: map[*cutConn]struct{}{}}
	f.set(true, "a", "b")
	a := startNode(t, f, "a", 0, nil)
	b := startNode(t, f, "b", 1, []string{a.addr})
	// The join and two retries have met the cut.
	wait.For(t, 10*time.Second, "three dials refused by the cut", func() bool { return f.cutDials.Load() >= 3 })
	if n := len(b.r.Members()); n != 1 {
		t.Fatalf("joined through a cut: %d members", n)
	}
	f.set(false, "a", "b")
	wait.For(t, 5*time.Second, "the two servers to find each other", func() bool {
		return len(a.r.Members()) == 2 && len(b.r.Members()) == 2
	})
}

// ids lists the instance IDs of a service as a server sees them.
func ids(r *Registry, svc string) []string {
	var out []string
	for _, in := range r.Get(registry.Key{Service: svc}).Instances {
		out = append(out, in.ID)
	}
	sort.Strings(out)
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// renewer plays the clients: it renews every instance a server owns.
func renewer(t *testing.T, nodes []*node) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			for _, n := range nodes {
				n.r.mu.RLock()
				var refs []registry.InstanceRef
				for k, s := range n.r.services {
					for id, in := range s.instances.all() {
						if in.Owner == n.r.cfg.NodeName {
							refs = append(refs, registry.InstanceRef{Key: k, ID: id})
						}
					}
				}
				n.r.mu.RUnlock()
				for _, ref := range refs {
					n.r.Heartbeat(ctx, ref.Key, ref.ID)
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

func TestGossipReplicates(t *testing.T) {
	nodes, _ := cluster(t, []string{"z1", "z1", "z1"})
	stop := renewer(t, nodes)
	defer stop()
	ctx := context.Background()
	_, err := nodes[0].r.Register(ctx, inst("orders", 1))
	must(t, err)
	_, err = nodes[1].r.Register(ctx, inst("orders", 2))
	must(t, err)
	want := []string{"10.0.0.1:1", "10.0.0.1:2"}
	wait.For(t, 5*time.Second, "both instances on every server", func() bool {
		for _, n := range nodes {
			if !equal(ids(n.r, "orders"), want) {
				return false
			}
		}
		return true
	})
	// A watcher on the third server is pushed a registration made on the first.
	snap := nodes[2].r.Get(registry.Key{Service: "orders"})
	got := make(chan registry.Snapshot, 1)
	go func() {
		s, _ := nodes[2].r.Watch(ctx, registry.Key{Service: "orders"}, snap.Revision)
		got <- s
	}()
	start := time.Now()
	_, err = nodes[0].r.Register(ctx, inst("orders", 3))
	must(t, err)
	select {
	case s := <-got:
		if len(s.Events) == 0 || s.Events[0].Instance.Port != 3 {
			t.Fatalf("%+v", s)
		}
		t.Logf("registration on server 1 pushed to a watcher on server 3 in %v", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("no push across servers")
	}
	// A deregistration on the owner reaches everyone.
	must(t, nodes[0].r.Deregister(ctx, registry.Key{Service: "orders"}, "10.0.0.1:1"))
	want = []string{"10.0.0.1:2", "10.0.0.1:3"}
	wait.For(t, 5*time.Second, "the deregistration everywhere", func() bool {
		for _, n := range nodes {
			if !equal(ids(n.r, "orders"), want) {
				return false
			}
		}
		return true
	})
}

// The seed's scenario: five servers in three zones (2, 2, 1), every link
// between zones cut. Each zone — the lone server's too — keeps registering,
// renewing and serving its own instances; after the links heal all five
// converge, with nothing lost and nothing deleted during the cut coming back.
func TestPartitionThreeZones(t *testing.T) {
	nodes, f := cluster(t, []string{"a", "a", "b", "b", "c"})
	stop := renewer(t, nodes)
	defer stop()
	ctx := context.Background()
	for i, n := range nodes {
		_, err := n.r.Register(ctx, inst("svc", 100+i))
		must(t, err)
	}
	all := func() []string {
		var out []string
		for i := range nodes {
			out = append(out, fmt.Sprintf("10.0.0.1:%d", 100+i))
		}
		return out
	}()
	sort.Strings(all)
	wait.For(t, 15*time.Second, "the pre-partition set everywhere", func() bool {
		for _, n := range nodes {
			if !equal(ids(n.r, "svc"), all) {
				return false
			}
		}
		return true
	})

	f.set(true, "a", "b", "c")
	// During the cut: every zone registers a new instance and zone a
	// deregisters one of its own; every server keeps answering.
	for i, n := range nodes {
		_, err := n.r.Register(ctx, inst("svc", 200+i))
		if err != nil {
			t.Fatalf("server %s refused a registration during the partition: %v", n.r.Node(), err)
		}
	}
	must(t, nodes[0].r.Deregister(ctx, registry.Key{Service: "svc"}, "10.0.0.1:100"))
	// Zone-local consistency: the two servers of zone b see each other's new
	// instances, and the lone server of zone c serves its own.
	wait.For(t, 15*time.Second, "zone b sees its own registrations", func() bool {
		l := ids(nodes[3].r, "svc")
		return contains(l, "10.0.0.1:202") && contains(l, "10.0.0.1:203")
	})
	if l := ids(nodes[4].r, "svc"); !contains(l, "10.0.0.1:204") || !contains(l, "10.0.0.1:104") {
		t.Fatalf("lone zone-c server lost its own instances: %v", l)
	}
	// Hold the cut long enough for memberlist to declare the other zones
	// dead and for their replicas to be dropped.
	wait.For(t, 40*time.Second, "each zone to count only its own servers", func() bool {
		return len(nodes[0].r.Members()) == 2 && len(nodes[3].r.Members()) == 2 && len(nodes[4].r.Members()) == 1
	})
	wait.For(t, 20*time.Second, "zone c to drop the replicas of the servers it lost", func() bool {
		l := ids(nodes[4].r, "svc")
		return !contains(l, "10.0.0.1:101") && !contains(l, "10.0.0.1:102")
	})
	if l := ids(nodes[4].r, "svc"); !contains(l, "10.0.0.1:204") {
		t.Fatalf("zone c lost its own instance during the cut: %v", l)
	}
	// The cut is real: zone c saw nothing of the others' new registrations,
	// and each side counts only its own servers.
	if l := ids(nodes[4].r, "svc"); contains(l, "10.0.0.1:200") || contains(l, "10.0.0.1:202") {
		t.Fatalf("zone c saw registrations made across the cut: %v", l)
	}
	if l := ids(nodes[4].r, "svc"); contains(l, "10.0.0.1:101") || contains(l, "10.0.0.1:102") {
		t.Fatalf("zone c kept replicas of servers it lost long ago: %v", l)
	}

	f.set(false, "a", "b", "c")
	var want []string
	for i := range nodes {
		if i != 0 {
			want = append(want, fmt.Sprintf("10.0.0.1:%d", 100+i))
		}
		want = append(want, fmt.Sprintf("10.0.0.1:%d", 200+i))
	}
	sort.Strings(want)
	wait.For(t, 40*time.Second, "all five servers converged after the heal", func() bool {
		for _, n := range nodes {
			if !equal(ids(n.r, "svc"), want) {
				return false
			}
		}
		return true
	})
	for _, n := range nodes {
		if contains(ids(n.r, "svc"), "10.0.0.1:100") {
			t.Fatalf("%s resurrected an instance deleted during the partition", n.r.Node())
		}
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
