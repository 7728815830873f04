package server

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv("KV_TEST_CHILD_DIR"); dir != "" {
		os.Exit(runChild(dir, os.Getenv("KV_TEST_CHILD_FSYNC")))
	}
	goleak.VerifyTestMain(m)
}

// runChild serves kv as a separate process for the kill -9 tests: it
// prints its address and runs until killed.
func runChild(dir, fsync string) int {
	cfg := DefaultConfig()
	cfg.Addr, cfg.Dir, cfg.Fsync = "127.0.0.1:0", dir, fsync
	s, err := New(cfg)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	if err := s.Start(context.Background()); err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("addr", s.Addr())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM)
	<-ch
	s.Close()
	return 0
}
