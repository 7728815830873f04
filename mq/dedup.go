package mq

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Idempotent consumption: a message can arrive more than once (a producer
// retry, a consumer that died before committing, a rebalance), so a
// handler with effects that must happen once records the messages it
// processed — a dedup table of message IDs — and skips repeats.

// Claim is what a DedupStore says about a message ID.
type Claim int

// The claims.
const (
	Claimed    Claim = iota // new: the caller processes it
	Duplicate               // processed already: skip it
	InProgress              // another consumer is processing it now: try later
)

// DedupStore records processed message IDs with an expiry.
type DedupStore interface {
	// Claim marks key as being processed for up to hold, unless it is
	// already processed or being processed.
	Claim(ctx context.Context, key string, hold time.Duration) (Claim, error)
	// Done marks key processed, remembered for keep.
	Done(ctx context.Context, key string, keep time.Duration) error
	// Release forgets a claim whose processing failed.
	Release(ctx context.Context, key string) error
}

// ErrInProgress is returned by an Idempotent handler for a message another
// consumer is processing; it comes back later through the retry topic.
var ErrInProgress = errors.New("mq: message being processed by another consumer")

// Idempotent wraps h so each message (by its producer ID) of group is
// handled once: a repeat within keep is skipped. A claim lasts 5 minutes,
// after which a consumer that died mid-way no longer blocks the message.
func Idempotent(st DedupStore, group string, keep time.Duration, h Handler) Handler {
	return func(ctx context.Context, m *Message) error {
		id := m.MsgID
		if id == "" {
			id = m.ID
		}
		key := group + "/" + id
		c, err := st.Claim(ctx, key, 5*time.Minute)
		if err != nil {
			return fmt.Errorf("mq: dedup: %w", err)
		}
		switch c {
		case Duplicate:
			return nil
		case InProgress:
			return ErrInProgress
		}
		if err := h(ctx, m); err != nil {
			if rerr := st.Release(context.WithoutCancel(ctx), key); rerr != nil {
				return errors.Join(err, fmt.Errorf("mq: dedup release: %w", rerr))
			}
			return err
		}
		return st.Done(context.WithoutCancel(ctx), key, keep)
	}
}
