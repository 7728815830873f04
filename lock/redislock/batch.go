package redislock

import (
	"context"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"
)

// batcher sends the scripts of concurrent callers together: a caller
// queues its script and waits; a sender takes everything queued and writes
// it as one pipeline — one write and one read for the batch instead of one
// round trip each (what rueidis calls auto-pipelining). Redis runs the
// scripts one after another exactly as if they had come separately: a
// pipeline is not a transaction, and each script is atomic on its own.
// With one caller at a time a batch is that one script, sent at once.
//
// Up to `senders` pipelines are in flight at once, so one slow reply does
// not hold every other caller back.
type batcher struct {
	rdb     redis.UniversalClient
	mu      sync.Mutex
	queue   []*call
	sending int
	senders int
	wg      sync.WaitGroup
}

// call is one queued script and, when done is closed, its reply.
type call struct {
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
	done   chan struct{}
}

// maxBatch bounds one pipeline (a larger queue goes in several).
const maxBatch = 128

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// run runs script and returns its reply. A caller whose ctx ends first
// gets ctx's error; its script may still run (as with any command whose
// reply was not waited for).
func (b *batcher) run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	if err := ctx.Err(); err != nil {
		return failed(ctx, err)
	}
	c := callPool.Get().(*call)
	c.script, c.keys, c.args, c.cmd = script, keys, args, nil
	b.mu.Lock()
	b.queue = append(b.queue, c)
	start := b.sending < b.senders
	if start {
		b.sending++
		b.wg.Add(1)
	}
	b.mu.Unlock()
	if start {
		go b.send()
	}
	select {
	case <-c.done:
		cmd := c.cmd
		c.script, c.keys, c.args, c.cmd = nil, nil, nil, nil
		callPool.Put(c)
		return cmd
	case <-ctx.Done():
		// The sender still writes to c.done (buffered): c is not reused.
		return failed(ctx, fmt.Errorf("redislock: waiting for Redis: %w", context.Cause(ctx)))
	}
}

func failed(ctx context.Context, err error) *redis.Cmd {
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(err)
	return cmd
}

// send writes batches until the queue is empty.
func (b *batcher) send() {
	defer b.wg.Done()
	for {
		b.mu.Lock()
		n := min(len(b.queue), maxBatch)
		if n == 0 {
			b.sending--
			b.mu.Unlock()
			return
		}
		batch := make([]*call, n)
		copy(batch, b.queue)
		rest := copy(b.queue, b.queue[n:])
		clear(b.queue[rest:])
		b.queue = b.queue[:rest]
		b.mu.Unlock()
		b.exec(batch)
	}
}

// exec runs one batch. The pipeline's context is not any caller's: a
// caller that gives up does not cut the others' replies short (the
// client's read and write timeouts bound it). A script Redis does not
// have cached yet (NOSCRIPT, after a restart or SCRIPT FLUSH) is sent
// again in full.
func (b *batcher) exec(batch []*call) {
	ctx := context.Background()
	if len(batch) == 1 {
		c := batch[0]
		c.cmd = c.script.Run(ctx, b.rdb, c.keys, c.args...)
		c.done <- struct{}{}
		return
	}
	pipe := b.rdb.Pipeline()
	for _, c := range batch {
		c.cmd = pipe.EvalSha(ctx, c.script.Hash(), c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	for _, c := range batch {
		if redis.HasErrorPrefix(c.cmd.Err(), "NOSCRIPT") {
			c.cmd = c.script.Run(ctx, b.rdb, c.keys, c.args...)
		}
		c.done <- struct{}{}
	}
}

// wait returns once no batch is being sent.
func (b *batcher) wait() { b.wg.Wait() }
