package server

func multiCommands() []*cmdSpec {
	return []*cmdSpec{
		noKey("multi", 1, flagMultiCtl, cmdMulti),
		noKey("exec", 1, flagMultiCtl, cmdExec),
		noKey("discard", 1, flagMultiCtl, cmdDiscard),
		{name: "watch", arity: -2, flags: flagMultiCtl | flagNoLock, first: 1, last: -1, step: 1, fn: cmdWatch},
		noKey("unwatch", 1, flagMultiCtl, func(x *ctx, _ [][]byte) { x.s.unwatchAll(x.c); x.ok() }),
	}
}

func cmdMulti(x *ctx, _ [][]byte) {
	if x.c.inMulti {
		x.err("ERR MULTI calls can not be nested")
		return
	}
	x.c.inMulti, x.c.multi, x.c.multiErr = true, nil, false
	x.ok()
}

func cmdDiscard(x *ctx, _ [][]byte) {
	if !x.c.inMulti {
		x.err("ERR DISCARD without MULTI")
		return
	}
	x.c.inMulti, x.c.multi, x.c.multiErr = false, nil, false
	x.s.unwatchAll(x.c)
	x.ok()
}

func cmdWatch(x *ctx, a [][]byte) {
	if x.c.inMulti {
		x.err("ERR WATCH inside MULTI is not allowed")
		return
	}
	c := x.c
	for _, k := range a[1:] {
		wk := wkey{x.db, string(k)}
		dup := false
		for _, o := range c.watched {
			if o == wk {
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		sh := &x.s.shards[shardOf(k)]
		sh.mu.Lock()
		if sh.watched == nil {
			sh.watched = map[wkey][]*client{}
		}
		sh.watched[wk] = append(sh.watched[wk], c)
		// A key already past its expiry counts as changed, as in Redis 7.
		if t := sh.dbs[x.db]; t != nil {
			if e := t.find(wk.key); e != nil && e.exp != 0 && e.exp < nowMs() {
				c.watchDirty.Store(true)
			}
		}
		sh.mu.Unlock()
		c.watched = append(c.watched, wk)
	}
	x.ok()
}

func (s *Server) unwatchAll(c *client) {
	for _, wk := range c.watched {
		sh := &s.shards[shardOf([]byte(wk.key))]
		sh.mu.Lock()
		ws := sh.watched[wk]
		for i, o := range ws {
			if o == c {
				ws = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(ws) == 0 {
			delete(sh.watched, wk)
		} else {
			sh.watched[wk] = ws
		}
		sh.mu.Unlock()
	}
	c.watched = nil
	c.watchDirty.Store(false)
}

// cmdExec runs the queued commands with the shards of all their keys held
// at once: no other command sees a state between two of them. A
// transaction that also holds key-less commands (KEYS, FLUSHDB, …) runs
// those between the others with their own locks.
func cmdExec(x *ctx, _ [][]byte) {
	c := x.c
	if !c.inMulti {
		x.err("ERR EXEC without MULTI")
		return
	}
	q, failed := c.multi, c.multiErr
	c.inMulti, c.multi, c.multiErr = false, nil, false
	if failed {
		x.s.unwatchAll(c)
		x.err("EXECABORT Transaction discarded because of previous errors.")
		return
	}
	var mask uint64
	plain := true
	for _, qc := range q {
		if qc.spec.flags&flagNoLock != 0 && qc.spec.name != "select" && qc.spec.name != "ping" && qc.spec.name != "echo" {
			plain = false
		}
		mask |= qc.spec.shardMask(qc.args)
	}
	s := x.s
	if !plain {
		mask = 0
	}
	s.lockMask(mask)
	// Checked under the locks: no write can slip in between.
	if c.watchDirty.Load() {
		s.unlockMask(mask)
		s.unwatchAll(c)
		x.nullArray()
		return
	}
	x.array(len(q))
	x.locked = mask
	x.memo = memo{} // a new lock section: what the memo points at may be gone
	x.touched, x.prop = x.touched[:0], x.prop[:0]
	var recs []dbRec
	for _, qc := range q {
		x.db = c.db
		x.now = nowMs()
		if qc.spec.flags&flagNoLock != 0 {
			if plain {
				qc.spec.fn(x, qc.args)
				continue
			}
			x.locked = 0
			x.memo = memo{} // a new lock section: what the memo points at may be gone
			qc.spec.fn(x, qc.args)
			continue
		}
		if !plain {
			m := qc.spec.shardMask(qc.args)
			s.lockMask(m)
			x.locked = m
			x.memo = memo{} // a new lock section: what the memo points at may be gone
		}
		n0 := len(x.touched)
		qc.spec.fn(x, qc.args)
		if qc.spec.flags&flagReadOnly != 0 && c.trk.Load() != nil {
			x.remember(qc.spec, qc.args)
		}
		if qc.spec.flags&flagWrite != 0 && qc.spec.flags&flagCustomProp == 0 && len(x.touched) > n0 {
			x.prop = append(x.prop, propRec{shardOf(qc.args[1]), qc.args})
		}
		if !plain {
			x.finish(qc.spec, qc.args)
			x.touched, x.prop = x.touched[:0], x.prop[:0]
			s.unlockMask(x.locked)
			x.locked = 0
			x.memo = memo{} // a new lock section: what the memo points at may be gone
		} else {
			// Each record names its database: SELECT inside the
			// transaction is replayed correctly.
			for _, p := range x.prop {
				recs = append(recs, dbRec{x.db, p.shard, p.args})
			}
			x.prop = x.prop[:0]
		}
	}
	if plain {
		x.noLog = true // the records are out already
		x.finish(nil, nil)
		x.noLog = false
		if s.aof != nil {
			s.aof.appendMulti(recs)
		}
		s.unlockMask(mask)
	}
	x.locked = 0
	x.memo = memo{} // a new lock section: what the memo points at may be gone
	s.unwatchAll(c)
}
