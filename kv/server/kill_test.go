package server

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tangram-dev/tangram/internal/wait"
)

func startChild(t *testing.T, dir, fsync string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "KV_TEST_CHILD_DIR="+dir, "KV_TEST_CHILD_FSYNC="+fsync)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "addr ") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child: %q %v", line, err)
	}
	return cmd, strings.TrimSpace(strings.TrimPrefix(line, "addr "))
}

// TestKill9KeepsAcknowledgedWrites: clients write while the server is
// killed with SIGKILL; after a restart every write a client was told
// succeeded is there — under fsync always and everysec alike, since the
// log reaches the file before a reply leaves (everysec's window is a power
// cut's, not a process crash's).
func TestKill9KeepsAcknowledgedWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("kills processes")
	}
	for _, fsync := range []string{FsyncAlways, FsyncEverySec} {
		t.Run(fsync, func(t *testing.T) {
			dir := t.TempDir()
			ctx := context.Background()
			cmd, addr := startChild(t, dir, fsync)
			const writers = 8
			var acked [writers]atomic.Int64
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
					defer c.Close()
					for i := int64(1); i <= 200000; i++ {
						select {
						case <-stop:
							return
						default:
						}
						var err error
						if i%2 == 0 {
							err = c.Set(ctx, fmt.Sprintf("k:%d:%d", w, i), i, 0).Err()
						} else {
							err = c.Incr(ctx, fmt.Sprintf("n:%d", w)).Err()
						}
						if err != nil {
							return
						}
						acked[w].Store(i)
					}
				}()
			}
			wait.For(t, 20*time.Second, "writes acknowledged", func() bool { return acked[0].Load() > 500 })
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			close(stop)
			wg.Wait()
			cmd, addr = startChild(t, dir, fsync)
			defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
			c := redis.NewClient(&redis.Options{Addr: addr})
			defer c.Close()
			total := int64(0)
			for w := 0; w < writers; w++ {
				last := acked[w].Load()
				total += last
				// Every acknowledged INCR: n:w counts the odd i up to last.
				n, err := c.Get(ctx, fmt.Sprintf("n:%d", w)).Int64()
				if err != nil && last > 0 {
					t.Fatalf("writer %d: n lost: %v", w, err)
				}
				if want := (last + 1) / 2; n < want {
					t.Fatalf("writer %d: counter %d after restart, %d increments acknowledged", w, n, want)
				}
				for i := int64(2); i <= last; i += 2 {
					if v, err := c.Get(ctx, fmt.Sprintf("k:%d:%d", w, i)).Int64(); err != nil || v != i {
						t.Fatalf("writer %d: acknowledged SET %d lost (%v, %v)", w, i, v, err)
					}
				}
			}
			t.Logf("robustness: kv kill -9 fsync=%s: %d acknowledged writes, all present after restart", fsync, total)
		})
	}
}
