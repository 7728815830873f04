package redislock_test

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tangram-dev/tangram/internal/redistest"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/lock"
	"github.com/tangram-dev/tangram/lock/redislock"
)

// helperMain is the holder process of the tests below: it takes the lock
// "res" (TTL 600 ms), prints its token, and on "write" from stdin writes
// the protected row with that token, printing ok or stale.
func helperMain() bool {
	spec := os.Getenv("TANGRAM_LOCK_HELPER")
	if spec == "" {
		return false
	}
	parts := strings.SplitN(spec, "|", 3)
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: parts[0]})
	c := redislock.New(rdb, redislock.Options{Prefix: parts[1], TTL: 600 * time.Millisecond})
	l, err := c.Mutex("res").Lock(ctx)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("fence", l.Fence)
	db, err := sql.Open("pgx", parts[2])
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "write" {
			err := lock.Fenced(ctx, db, l.Fence, `UPDATE res SET who = 'helper', fence = $1 WHERE id = 1 AND fence <= $1`, int64(l.Fence))
			switch {
			case errors.Is(err, lock.ErrStaleFence):
				fmt.Println("stale")
			case err != nil:
				fmt.Println("error", err)
			default:
				fmt.Println("ok")
			}
		}
	}
	os.Exit(0)
	return true
}

type holder struct {
	cmd *exec.Cmd
	in  *os.File
	out *bufio.Scanner
}

func startHolder(t *testing.T, addr, prefix, dsn string) (*holder, uint64) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TANGRAM_LOCK_HELPER="+addr+"|"+prefix+"|"+dsn)
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	inR.Close()
	outW.Close()
	h := &holder{cmd: cmd, in: inW, out: bufio.NewScanner(outR)}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		inW.Close()
		outR.Close()
	})
	line := h.line(t)
	var fence uint64
	if _, err := fmt.Sscanf(line, "fence %d", &fence); err != nil {
		t.Fatalf("holder said %q", line)
	}
	return h, fence
}

func (h *holder) line(t *testing.T) string {
	t.Helper()
	if !h.out.Scan() {
		t.Fatalf("holder ended: %v", h.out.Err())
	}
	return h.out.Text()
}

func protected(t *testing.T) (*sql.DB, string) {
	dsn := storetest.DSN(t, store.Postgres)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`CREATE TABLE res (id int PRIMARY KEY, who text NOT NULL, fence bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO res VALUES (1, 'nobody', 0)`); err != nil {
		t.Fatal(err)
	}
	return db, dsn
}

// A holder paused (SIGSTOP) past its lease loses the lock to another; when
// it resumes and writes, the fence rejects its write.
func TestPausedHolderIsFencedOff(t *testing.T) {
	db, dsn := protected(t)
	rdb := redistest.KV(t)
	prefix := redistest.Prefix(t)
	h, oldFence := startHolder(t, rdb.Options().Addr, prefix, dsn)
	if err := h.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, rdb, prefix, 5*time.Second, 100*time.Millisecond)
	m := c.Mutex("res")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := m.Lock(ctx)
	if err != nil {
		t.Fatalf("the paused holder's lock did not pass on: %v", err)
	}
	if l.Fence <= oldFence {
		t.Fatalf("new token %d not above the paused holder's %d", l.Fence, oldFence)
	}
	if err := lock.Fenced(ctx, db, l.Fence, `UPDATE res SET who = 'new', fence = $1 WHERE id = 1 AND fence <= $1`, int64(l.Fence)); err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(h.in, "write")
	if got := h.line(t); got != "stale" {
		t.Fatalf("the resumed holder's write: %q, want stale", got)
	}
	var who string
	if err := db.QueryRow(`SELECT who FROM res`).Scan(&who); err != nil || who != "new" {
		t.Fatalf("row written by %q (%v), want the new holder", who, err)
	}
	_ = m.Unlock(ctx)
}

// A holder killed with -9 stops renewing; the lock passes on once its
// lease ends — not before.
func TestKilledHolderLockPassesOn(t *testing.T) {
	_, dsn := protected(t)
	rdb := redistest.KV(t)
	prefix := redistest.Prefix(t)
	h, oldFence := startHolder(t, rdb.Options().Addr, prefix, dsn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = h.cmd.Wait()
	killed := time.Now()
	pttl := rdb.PTTL(ctx, prefix+"{res}").Val()
	c := newClient(t, rdb, prefix, 5*time.Second, 50*time.Millisecond)
	l, err := c.Mutex("res").Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(killed)
	if pttl > 0 && took < pttl-5*time.Millisecond {
		t.Fatalf("taken %v after the kill, before the lease's remaining %v", took, pttl)
	}
	if took > 600*time.Millisecond+2*time.Second || l.Fence <= oldFence {
		t.Fatalf("taken after %v with token %d (old %d)", took, l.Fence, oldFence)
	}
	t.Logf("lock passed on %v after kill -9 (lease left then: %v)", took, pttl)
}
