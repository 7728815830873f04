// Package redisdedup keeps mq's table of processed message IDs in Redis,
// for mq.Idempotent: one key per message ID, with a TTL.
package redisdedup

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tangram-dev/tangram/mq"
)

var _ mq.DedupStore = (*Store)(nil)

// Store keeps the table in Redis (or Redis Cluster, or tangram kv): one key per message ID, with a TTL.
type Store struct {
	Client redis.UniversalClient
	Prefix string // default "tangram:mq:dedup:"
}

func (r *Store) key(k string) string {
	if r.Prefix == "" {
		return "tangram:mq:dedup:" + k
	}
	return r.Prefix + k
}

// Claim implements mq.DedupStore.
func (r *Store) Claim(ctx context.Context, key string, hold time.Duration) (mq.Claim, error) {
	ok, err := r.Client.SetNX(ctx, r.key(key), "processing", hold).Result()
	if err != nil || ok {
		return mq.Claimed, err
	}
	v, err := r.Client.Get(ctx, r.key(key)).Result()
	if errors.Is(err, redis.Nil) {
		return r.Claim(ctx, key, hold) // expired between the two calls
	}
	if err != nil {
		return mq.Claimed, err
	}
	if v == "done" {
		return mq.Duplicate, nil
	}
	return mq.InProgress, nil
}

// Done implements mq.DedupStore.
func (r *Store) Done(ctx context.Context, key string, keep time.Duration) error {
	return r.Client.Set(ctx, r.key(key), "done", keep).Err()
}

// Release implements mq.DedupStore.
func (r *Store) Release(ctx context.Context, key string) error {
	return r.Client.Del(ctx, r.key(key)).Err()
}
