package shard

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Read/write splitting: a SELECT outside a transaction (and without FOR
// UPDATE or LOCK IN SHARE MODE) on a data source with a ReadGroup runs on
// one of its replicas; writes, locking reads and transactions run on the
// primary. A group with MaxLag has its replicas checked every
// ExecutorConfig.LagCheckInterval (SHOW SLAVE STATUS): one further behind
// than MaxLag, not replicating, or not answering is skipped until it
// catches up; with every replica skipped, reads go to the primary.

// replicaGroup is one primary's replicas as the executor sees them.
type replicaGroup struct {
	g      *ReadGroup
	next   atomic.Uint64
	usable []atomic.Bool
	state  []replicaState // guarded by mu
	mu     sync.Mutex
}

type replicaState struct {
	lag     time.Duration
	err     string
	checked time.Time
}

// ReplicaState is a replica's standing, as the last check saw it.
type ReplicaState struct {
	Name, Primary string
	// Usable: reads go to it.
	Usable bool
	// Lag behind the primary at the last check (-1: unknown).
	Lag time.Duration
	// Why it is skipped ("" when usable).
	Reason  string
	Checked time.Time
}

func newReplicaGroups(r *Rules) map[string]*replicaGroup {
	out := map[string]*replicaGroup{}
	for ds, g := range r.reads {
		rg := &replicaGroup{g: g, usable: make([]atomic.Bool, len(g.Replicas)), state: make([]replicaState, len(g.Replicas))}
		for i := range g.Replicas {
			// Without a lag limit replicas are read from unchecked; with
			// one, only once a check has found them close enough.
			rg.usable[i].Store(g.MaxLag == 0)
			rg.state[i].lag = -1
			if g.MaxLag > 0 {
				rg.state[i].err = "not checked yet"
			}
		}
		out[ds] = rg
	}
	return out
}

// readRunner is the runner a read on data source ds uses outside a
// transaction: a usable replica of its group, else ds itself.
func (e *Executor) readRunner(_ context.Context, ds string) (runner, error) {
	rg := e.reads[ds]
	if rg == nil {
		return e.traceUnits(pooled{e.dbs[ds], e.stmts}, ds), nil
	}
	n := uint64(len(rg.g.Replicas))
	var start uint64
	if rg.g.LoadBalancer == "RANDOM" {
		start = rand.Uint64N(n)
	} else {
		start = rg.next.Add(1) - 1
	}
	for i := range n {
		idx := (start + i) % n
		if rg.usable[idx].Load() {
			return e.traceUnits(pooled{e.dbs[rg.g.Replicas[idx]], e.stmts}, rg.g.Replicas[idx]), nil
		}
	}
	return e.traceUnits(pooled{e.dbs[ds], e.stmts}, ds), nil
}

// Replicas reports every replica's standing, by primary then order.
func (e *Executor) Replicas() []ReplicaState {
	var out []ReplicaState
	for _, ds := range e.router.rules.DataSourceNames() {
		rg := e.reads[ds]
		if rg == nil {
			continue
		}
		rg.mu.Lock()
		for i, name := range rg.g.Replicas {
			st := rg.state[i]
			out = append(out, ReplicaState{Name: name, Primary: ds, Usable: rg.usable[i].Load(), Lag: st.lag, Reason: st.err, Checked: st.checked})
		}
		rg.mu.Unlock()
	}
	return out
}

// monitor checks the replicas of groups with a lag limit every interval
// until ctx ends.
func (e *Executor) monitor(ctx context.Context, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for _, rg := range e.reads {
			if rg.g.MaxLag == 0 {
				continue
			}
			for i, name := range rg.g.Replicas {
				cctx, cancel := context.WithTimeout(ctx, interval)
				lag, err := replicationLag(cctx, e.dbs[name])
				cancel()
				if ctx.Err() != nil {
					return
				}
				reason := ""
				switch {
				case err != nil:
					reason = err.Error()
				case lag > rg.g.MaxLag:
					reason = fmt.Sprintf("%v behind its primary, more than maxReplicationLag %v", lag, rg.g.MaxLag)
				}
				rg.mu.Lock()
				rg.state[i] = replicaState{lag: lag, err: reason, checked: time.Now()}
				rg.mu.Unlock()
				was := rg.usable[i].Swap(reason == "")
				switch {
				case was && reason != "":
					log.Warn("replica skipped: reads go elsewhere", "replica", name, "primary", rg.g.Primary, "reason", reason)
				case !was && reason == "":
					log.Info("replica read from", "replica", name, "primary", rg.g.Primary, "lag", lag)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// errNotReplicating is a replica whose replication is stopped or broken.
var errNotReplicating = errors.New("shard: not replicating (SHOW SLAVE STATUS has no rows, or Seconds_Behind_Master is NULL)")

// replicationLag reads a replica's Seconds_Behind_Master (MariaDB, MySQL
// before 8.0.22) or Seconds_Behind_Source (MySQL 8.0.22 on).
func replicationLag(ctx context.Context, db *sql.DB) (time.Duration, error) {
	rows, err := db.QueryContext(ctx, "SHOW SLAVE STATUS")
	if err != nil {
		return -1, fmt.Errorf("shard: SHOW SLAVE STATUS: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return -1, err
	}
	at := -1
	for i, c := range cols {
		if c == "Seconds_Behind_Master" || c == "Seconds_Behind_Source" {
			at = i
		}
	}
	if at < 0 {
		return -1, errors.New("shard: SHOW SLAVE STATUS has no Seconds_Behind_Master column")
	}
	if !rows.Next() {
		return -1, errNotReplicating
	}
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return -1, err
	}
	if vals[at] == nil {
		return -1, errNotReplicating
	}
	s, err := strconv.ParseInt(string(vals[at]), 10, 64)
	if err != nil {
		return -1, fmt.Errorf("shard: Seconds_Behind_Master %q: %w", vals[at], err)
	}
	return time.Duration(s) * time.Second, rows.Err()
}
