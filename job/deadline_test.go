package job

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/rpc"
)

// A run that reaches its executor past its dispatch deadline (a scheduler
// paused with it, a call retried late) is refused and not remembered as
// received; one inside its deadline runs. The scheduler's reconciliation
// relies on the refusal: it fails, and retries, a run assigned long enough
// before the executor's list without it, knowing it can no longer arrive.
func TestRunPastItsDispatchDeadlineRefused(t *testing.T) {
	e, err := NewExecutor(ExecutorConfig{Insecure: true, App: "a", Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan int64, 2)
	e.Handle("h", func(ctx context.Context, jc *Context) error { ran <- jc.RunID; return nil })
	ctx := context.Background()
	late := &RunRequest{RunID: 1, JobID: 1, Job: "j", Handler: "h", Deadline: time.Now().Add(-time.Millisecond).UnixMilli()}
	_, err = e.serveRun(ctx, late)
	if rpc.CodeOf(err) != rpc.FailedPrecondition || !strings.Contains(err.Error(), "past its dispatch deadline") {
		t.Fatalf("a run past its deadline: %v (want FailedPrecondition, naming the deadline)", err)
	}
	e.mu.Lock()
	_, seen := e.seen[1]
	running := e.running
	e.mu.Unlock()
	if seen || running != 0 {
		t.Fatalf("the refused run was taken: seen %v, running %d", seen, running)
	}
	onTime := &RunRequest{RunID: 2, JobID: 1, Job: "j", Handler: "h", Deadline: time.Now().Add(DispatchWindow).UnixMilli()}
	if _, err := e.serveRun(ctx, onTime); err != nil {
		t.Fatalf("a run inside its deadline: %v", err)
	}
	if id := <-ran; id != 2 {
		t.Fatalf("ran run %d, want 2", id)
	}
	e.wg.Wait()
	select {
	case id := <-ran:
		t.Fatalf("run %d ran as well", id)
	default:
	}
}
