package cpubudget

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"
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
	pid := cmd.Process.Pid
	u0 := procCPU(t, pid)
	start := time.Now()
	// Until the process has used 200 ms of CPU: at 0.2 CPU that takes
	// about a second of wall time, unlimited a fifth of one.
	var u1 time.Duration
	wait.For(t, 20*time.Second, "the busy process to use 200 ms of CPU", func() bool {
		u1 = procCPU(t, pid)
		return u1-u0 >= 200*time.Millisecond
	})
	share := float64(u1-u0) / float64(time.Since(start))
	if share > 0.3 {
		t.Fatalf("a 0.2-CPU group used %.2f CPU", share)
	}
	_, thr, err := g.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if thr == 0 {
		t.Logf("no throttled time reported (process used %v)", u1-u0)
	}
}

// procCPU is a process's user+system CPU time from /proc/<pid>/stat.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * time.Second / 100
}
