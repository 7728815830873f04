package server_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/internal/faults"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/registry"
	"github.com/tangram-dev/tangram/server/servertest"
)

// netLab is three network namespaces joined by a bridge of our own: the
// servers run one per namespace and gossip over the bridge; the test
// process reaches each through the bridge's address. A partition is made
// with blackhole routes inside the namespaces (no iptables needed), so it
// drops traffic silently, as a cut cable does: no FIN, no RST.
type netLab struct {
	t      *testing.T
	tag    string // unique prefix of every name
	subnet string // "10.213.N."
	bridge string
	ns     []string
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newNetLab(t *testing.T, n int) *netLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root (CI runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("the ip command (iproute2) is needed: ", err)
	}
	id := os.Getpid() % 10000
	l := &netLab{t: t, tag: fmt.Sprintf("tg%d", id), subnet: fmt.Sprintf("10.213.%d.", id%250), bridge: fmt.Sprintf("tg%dbr", id)}
	t.Cleanup(l.close)
	run(t, "ip", "link", "add", l.bridge, "type", "bridge")
	run(t, "ip", "addr", "add", l.subnet+"254/24", "dev", l.bridge)
	run(t, "ip", "link", "set", l.bridge, "up")
	for i := range n {
		ns := fmt.Sprintf("%sn%d", l.tag, i)
		host, peer := fmt.Sprintf("%sv%d", l.tag, i), fmt.Sprintf("%sp%d", l.tag, i)
		run(t, "ip", "netns", "add", ns)
		l.ns = append(l.ns, ns)
		run(t, "ip", "link", "add", host, "type", "veth", "peer", "name", peer)
		run(t, "ip", "link", "set", peer, "netns", ns)
		run(t, "ip", "link", "set", host, "master", l.bridge)
		run(t, "ip", "link", "set", host, "up")
		run(t, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
		run(t, "ip", "netns", "exec", ns, "ip", "addr", "add", l.addr(i)+"/24", "dev", peer)
		run(t, "ip", "netns", "exec", ns, "ip", "link", "set", peer, "up")
	}
	return l
}

func (l *netLab) addr(i int) string { return fmt.Sprintf("%s%d", l.subnet, i+1) }

func (l *netLab) close() {
	for _, ns := range l.ns {
		_ = exec.Command("ip", "netns", "del", ns).Run() // takes its veth pair along
	}
	_ = exec.Command("ip", "link", "del", l.bridge).Run()
}

// cut drops all traffic between the namespaces of side a and those of side
// b (both ways); heal restores it.
func (l *netLab) cut(a, b []int, add bool) {
	op := "add"
	if !add {
		op = "del"
	}
	for _, i := range a {
		for _, j := range b {
			run(l.t, "ip", "netns", "exec", l.ns[i], "ip", "route", op, "blackhole", l.addr(j)+"/32")
			run(l.t, "ip", "netns", "exec", l.ns[j], "ip", "route", op, "blackhole", l.addr(i)+"/32")
		}
	}
}

// TestRegistryPartitionInNetns runs three tangram servers, one per network
// namespace, as a registry cluster; cuts the third off from the other two
// (blackhole routes: packets vanish) while instances register and renew on
// both sides; checks that each side serves its own and that nothing
// crosses the cut; heals it, and measures how long the cluster takes to
// converge (every server listing every instance). The long version holds
// the cut past memberlist's failure detection and RemoveAfter, measuring
// when each side drops the other's replicas and how long after the heal
// the halves find each other again.
func TestRegistryPartitionInNetns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary, makes network namespaces")
	}
	lab := newNetLab(t, 3)
	bin := buildBinary(t)
	for i := range 3 {
		a := lab.addr(i)
		args := []string{"netns", "exec", lab.ns[i], bin, "server", "--http", a + ":7070", "--rpc", a + ":7071", "--broker", "off", "--kv", "off", "--otlp-http", "off", "--otlp-grpc", "off",
			"--gossip", a + ":7946", "--data", t.TempDir(), "--log-level", "warn"}
		if i > 0 {
			args = append(args, "--join", lab.addr(0)+":7946")
		}
		cmd := exec.Command("ip", args...)
		cmd.Env = append(os.Environ(), "TANGRAM_BOOTSTRAP_TOKEN="+servertest.AdminToken, "TANGRAM_SECRET_KEY="+strings.Repeat("ab", 32))
		logf, err := os.CreateTemp(t.TempDir(), "server-*.log")
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
			if t.Failed() {
				b, _ := os.ReadFile(logf.Name())
				t.Logf("server %d log:\n%s", i, b)
			}
		})
	}
	api := func(i int) *apiclient.Client {
		return apiclient.New("http://"+lab.addr(i)+":7070", servertest.AdminToken)
	}
	ctx := context.Background()
	members := func(i int) int {
		var st registry.Status
		if err := api(i).Do(ctx, "GET", "/api/v1/registry/status", nil, &st); err != nil {
			return 0
		}
		return len(st.Members)
	}
	wait.For(t, 30*time.Second, "three members everywhere", func() bool { return members(0) == 3 && members(1) == 3 && members(2) == 3 })
	listed := func(i int) []string {
		var snap registry.Snapshot
		if err := api(i).Do(ctx, "GET", "/api/v1/registry/services/public/default/svc", nil, &snap); err != nil {
			return nil
		}
		var ids []string
		for _, in := range snap.Instances {
			ids = append(ids, in.ID)
		}
		slices.Sort(ids)
		return ids
	}
	// Instances register on their server and renew there every second.
	var mu sync.Mutex
	owned := map[string]int{}
	register := func(id string, on int) {
		in := registry.Instance{Key: registry.Key{Namespace: "public", Group: "default", Service: "svc"}, ID: id, Host: "10.0.0.1", Port: 80, Ephemeral: true}
		if err := api(on).Do(ctx, "POST", "/api/v1/registry/instances", in, nil); err != nil {
			t.Fatalf("register %s on server %d: %v", id, on, err)
		}
		mu.Lock()
		owned[id] = on
		mu.Unlock()
	}
	stop := make(chan struct{})
	var beats sync.WaitGroup
	beats.Add(1)
	go func() {
		defer beats.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
			mu.Lock()
			for id, on := range owned {
				_ = api(on).Do(ctx, "PUT", "/api/v1/registry/services/public/default/svc/instances/"+id+"/heartbeat", nil, nil)
			}
			mu.Unlock()
		}
	}()
	defer func() { close(stop); beats.Wait() }()
	register("a", 0)
	register("c", 2)
	all := func(want ...string) func() bool {
		return func() bool {
			for i := range 3 {
				if !slices.Equal(listed(i), want) {
					return false
				}
			}
			return true
		}
	}
	wait.For(t, 20*time.Second, "a and c on every server", all("a", "c"))

	hold := 8 * time.Second // short: healed before failure detection ends
	if faults.Long() {
		hold = 75 * time.Second // past detection (≈6–15 s) + RemoveAfter (30 s)
	}
	cutAt := time.Now()
	lab.cut([]int{0, 1}, []int{2}, true)
	register("b", 0) // majority side
	register("d", 2) // minority side
	// Each side serves its own, and nothing crosses the cut.
	wait.For(t, 10*time.Second, "b on both majority servers", func() bool {
		return slices.Contains(listed(0), "b") && slices.Contains(listed(1), "b")
	})
	var dropA, dropC time.Duration
	deadline := cutAt.Add(hold)
	for time.Now().Before(deadline) {
		l0, l1, l2 := listed(0), listed(1), listed(2)
		if slices.Contains(l0, "d") || slices.Contains(l1, "d") || slices.Contains(l2, "b") {
			t.Fatalf("a registration crossed the cut: %v %v %v", l0, l1, l2)
		}
		if !slices.Contains(l0, "a") || !slices.Contains(l2, "c") || !slices.Contains(l2, "d") {
			t.Fatalf("a side lost its own instance: %v %v %v", l0, l1, l2)
		}
		if dropC == 0 && l0 != nil && !slices.Contains(l0, "c") {
			dropC = time.Since(cutAt)
		}
		if dropA == 0 && l2 != nil && !slices.Contains(l2, "a") {
			dropA = time.Since(cutAt)
		}
		time.Sleep(250 * time.Millisecond) // sleep-ok: the lists are sampled through the cut
	}
	healAt := time.Now()
	lab.cut([]int{0, 1}, []int{2}, false)
	wait.For(t, 90*time.Second, "every instance on every server after the heal", all("a", "b", "c", "d"))
	converged := time.Since(healAt)
	wait.For(t, 30*time.Second, "three members everywhere after the heal", func() bool { return members(0) == 3 && members(1) == 3 && members(2) == 3 })
	faults.Report(t, "registry partition (network namespaces, blackhole routes)", "cut", hold.Round(time.Second),
		"majority_dropped_minority_replica_after", dropC.Round(100*time.Millisecond), "minority_dropped_majority_replica_after", dropA.Round(100*time.Millisecond),
		"converged_after_heal", converged.Round(time.Millisecond))
	if faults.Long() && (dropC == 0 || dropA == 0) {
		t.Fatalf("after a %v cut the replicas across it were not dropped (majority %v, minority %v)", hold, dropC, dropA)
	}
}
