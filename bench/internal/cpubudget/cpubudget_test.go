package cpubudget

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// A busy process in a 0.2-CPU group gets about 0.2 CPU, and is throttled.
func TestBudgetLimitsABusyProcess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("cgroups need root")
	}
	g, err := New("tangram-cpubudget-test", 0.2, 100*time.Millisecond)
	if err != nil {
		t.Skip(err) // no cpu controller on this host
	}
	defer g.Close()
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if err := g.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	u0, _, _ := g.Usage()
	start := time.Now()
	time.Sleep(time.Second) // sleep-ok: the process burns CPU for a second of wall time
	u1, thr, err := g.Usage()
	if err != nil {
		t.Fatal(err)
	}
	share := float64(u1-u0) / float64(time.Since(start))
	if share > 0.3 {
		t.Fatalf("a 0.2-CPU group used %.2f CPU", share)
	}
	if u1 > 0 && share < 0.05 {
		t.Fatalf("the process got only %.2f CPU of its 0.2", share)
	}
	if thr == 0 {
		t.Logf("no throttled time reported (usage %v)", u1-u0)
	}
}
