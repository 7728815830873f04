package server

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/internal/durable"
	"github.com/tangram-dev/tangram/kv/resp"
)

// aof is the append-only log: every change as a RESP command, in files
// named by a manifest — a base file (the data set as commands that rebuild
// it) and an incremental file after it, as Redis 7's multi-part AOF.
//
// Writes reach the file before the client sees its reply (a write(2) per
// batch of replies); fsync follows the policy: always (before the reply,
// commits grouped), everysec (a background fsync each second) or no.
//
// Rewrite, without fork and without a copy of the data set: the shards
// are serialised into a new base file one at a time, each under its own
// lock only; a shard's changes made after it was serialised are appended,
// besides the current incremental file, to the next one. When every shard
// is done the manifest switches to the new pair. A restart replays the
// base, then the incremental file; a torn tail (a crash mid-write) is cut
// and logged; damage before the tail refuses to start, naming the file and
// offset.
type aof struct {
	s      *Server
	dir    string
	policy string
	log    interface{ Warn(string, ...any) }

	mu      sync.Mutex
	buf     []byte // appended, not yet written
	lastDB  int
	f       *os.File
	man     manifest
	offset  int64 // bytes appended to the current file, written or not
	written int64
	size    int64 // current incremental file's size
	base    int64 // base file's size
	err     error
	lastWr  string

	syncMu sync.Mutex
	synced int64
	// wmu lets one goroutine at a time write the buffer out; lock order
	// syncMu, wmu, mu.
	wmu   sync.Mutex
	spare []byte

	// rewrite state, guarded by mu
	rewriting   bool
	dumped      [numShards]bool
	rbuf        []byte
	rLastDB     int
	rf          *os.File
	rewrites    int
	lastRewrite string
	lastSize    int64 // size after the last rewrite
	abort       bool
	wake        chan struct{}
}

type manifest struct {
	Seq  int    `json:"seq"`
	Base string `json:"base"`
	Incr string `json:"incr"`
}

type aofStatus struct {
	rewriting              bool
	rewrites               int
	lastRewrite, lastWrite string
	size, baseSize         int64
}

func openAOF(s *Server, dir, policy string) (*aof, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("kv: %w", err)
	}
	a := &aof{s: s, dir: dir, policy: policy, log: s.log, lastDB: -1, lastRewrite: "ok", lastWr: "ok", wake: make(chan struct{}, 1)}
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		a.man = manifest{Seq: 1, Base: "base.1.aof", Incr: "incr.1.aof"}
		if err := durable.WriteFile(filepath.Join(dir, a.man.Base), nil, 0o644); err != nil {
			return nil, fmt.Errorf("kv: %w", err)
		}
		if err := a.writeManifest(a.man); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("kv: %w", err)
	default:
		if err := json.Unmarshal(b, &a.man); err != nil || a.man.Base == "" || a.man.Incr == "" {
			return nil, fmt.Errorf("kv: %s is damaged: %v", filepath.Join(dir, "manifest.json"), err)
		}
	}
	if a.base, err = a.load(a.man.Base, false); err != nil {
		return nil, err
	}
	if a.size, err = a.load(a.man.Incr, true); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, a.man.Incr), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kv: %w", err)
	}
	if err := durable.SyncDir(dir); err != nil {
		f.Close()
		return nil, fmt.Errorf("kv: %w", err)
	}
	a.f = f
	a.offset, a.written, a.synced = a.size, a.size, a.size
	a.lastSize = a.base + a.size
	return a, nil
}

func (a *aof) writeManifest(m manifest) error {
	b, _ := json.Marshal(m)
	if err := durable.WriteFile(filepath.Join(a.dir, "manifest.json"), b, 0o644); err != nil {
		return fmt.Errorf("kv: manifest: %w", err)
	}
	return nil
}

// load replays one file; a torn tail of the incremental file is cut.
func (a *aof) load(name string, tail bool) (int64, error) {
	path := filepath.Join(a.dir, name)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("kv: %w", err)
	}
	defer f.Close()
	cr := &countReader{r: f}
	rd := resp.NewReader(cr, 1<<16)
	rd.MaxArgs, rd.MaxBulk = 1<<24, 512<<20
	rd.MaxRequest = 1 << 40
	lc := &client{s: a.s, authed: true}
	lc.x.s, lc.x.c, lc.x.loading = a.s, lc, true
	var good int64
	var block [][][]byte // a MULTI … EXEC group, applied whole or not at all
	inMulti := false
	for {
		args, err := rd.ReadCommand()
		if err == io.EOF {
			break
		}
		if err != nil {
			at := good
			if !tail {
				return 0, fmt.Errorf("kv: %s is damaged at byte %d (%v): restore it or remove it", path, at, err)
			}
			if errors.Is(err, io.ErrUnexpectedEOF) || resp.IsProtocol(err) {
				return a.cut(path, at, err)
			}
			return 0, fmt.Errorf("kv: read %s: %w", path, err)
		}
		switch {
		case eqFold(args[0], "multi"):
			inMulti, block = true, nil
		case eqFold(args[0], "exec"):
			for _, c := range block {
				lc.replay(c)
			}
			inMulti, block = false, nil
			good = cr.n - int64(rd.Buffered())
		case inMulti:
			block = append(block, copyArgs(args))
		default:
			if msg := lc.replay(args); msg != "" {
				return 0, fmt.Errorf("kv: %s at byte %d: %s", path, good, msg)
			}
			good = cr.n - int64(rd.Buffered())
		}
	}
	if inMulti {
		if !tail {
			return 0, fmt.Errorf("kv: %s ends inside MULTI at byte %d", path, good)
		}
		return a.cut(path, good, errors.New("a transaction without its EXEC"))
	}
	return good, nil
}

func (a *aof) cut(path string, at int64, why error) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("kv: %w", err)
	}
	a.log.Warn("kv: the append-only file has a torn tail (a crash during a write): cut", "file", path, "at", at, "dropped_bytes", fi.Size()-at, "reason", why.Error())
	if err := os.Truncate(path, at); err != nil {
		return 0, fmt.Errorf("kv: cut %s: %w", path, err)
	}
	return at, nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// replay runs one logged command; it returns the error text of a command
// that failed (the log holds only commands that succeeded).
func (c *client) replay(args [][]byte) string {
	spec := commands[lowerName(args[0])]
	if spec == nil || !spec.arityOK(len(args)) {
		return "unknown command or arity " + strconv.Quote(clip(string(args[0]), 64))
	}
	x := &c.x
	x.reset()
	x.db = c.db
	x.now = nowMs()
	c.out = c.out[:0]
	c.lastErr = false
	if spec.flags&flagNoLock != 0 {
		spec.fn(x, args)
	} else {
		mask := spec.shardMask(args)
		c.s.lockMask(mask)
		x.locked = mask
		x.memo = memo{} // a new lock section: what the memo points at may be gone
		spec.fn(x, args)
		x.finish(spec, args)
		c.s.unlockMask(mask)
	}
	if c.lastErr {
		return string(c.out)
	}
	return ""
}

func appendRec(b []byte, lastDB *int, db int, args [][]byte) []byte {
	if db != *lastDB && db >= 0 {
		b = resp.AppendCommand(b, []byte("SELECT"), strconv.AppendInt(nil, int64(db), 10))
		*lastDB = db
	}
	return resp.AppendCommand(b, args...)
}

// append adds a record; the caller holds the lock of shard (all shards
// when shard < 0).
func (a *aof) append(db, shard int, args [][]byte) {
	a.mu.Lock()
	n := len(a.buf)
	a.buf = appendRec(a.buf, &a.lastDB, db, args)
	a.offset += int64(len(a.buf) - n)
	if a.rewriting {
		if shard < 0 {
			a.abort = true // a FLUSH during a rewrite: start again later
		} else if a.dumped[shard] {
			a.rbuf = appendRec(a.rbuf, &a.rLastDB, db, args)
		}
	}
	a.mu.Unlock()
}

type dbRec struct {
	db, shard int
	args      [][]byte
}

// appendMulti adds a transaction's records as one MULTI … EXEC group.
func (a *aof) appendMulti(recs []dbRec) {
	if len(recs) == 0 {
		return
	}
	a.mu.Lock()
	n := len(a.buf)
	a.buf = resp.AppendCommand(a.buf, []byte("MULTI"))
	rn := len(a.rbuf)
	if a.rewriting {
		a.rbuf = resp.AppendCommand(a.rbuf, []byte("MULTI"))
	}
	any := false
	for _, r := range recs {
		a.buf = appendRec(a.buf, &a.lastDB, r.db, r.args)
		if a.rewriting && a.dumped[r.shard] {
			a.rbuf = appendRec(a.rbuf, &a.rLastDB, r.db, r.args)
			any = true
		}
	}
	a.buf = resp.AppendCommand(a.buf, []byte("EXEC"))
	if a.rewriting {
		if any {
			a.rbuf = resp.AppendCommand(a.rbuf, []byte("EXEC"))
		} else {
			a.rbuf = a.rbuf[:rn]
		}
	}
	a.offset += int64(len(a.buf) - n)
	a.mu.Unlock()
}

// writeOut writes what was appended so far (before replies leave).
// Writers take turns, and one write(2) carries every record appended while
// the previous one was in flight (a group write, as Redis's one write per
// event-loop pass): a client whose records went out with another's write
// finds them written and returns at once. The write runs outside mu, so
// commands keep appending meanwhile.
func (a *aof) writeOut() error {
	a.mu.Lock()
	want := a.offset
	a.mu.Unlock()
	a.wmu.Lock()
	defer a.wmu.Unlock()
	return a.writeUpTo(want)
}

// writeUpTo writes the buffer unless the bytes up to want are out already;
// the caller holds wmu.
func (a *aof) writeUpTo(want int64) error {
	a.mu.Lock()
	if a.written >= want || len(a.buf) == 0 {
		err := a.err
		a.mu.Unlock()
		return err
	}
	buf, f := a.buf, a.f
	a.buf = a.spare[:0]
	a.spare = nil
	var rbuf []byte
	var rf *os.File
	if a.rewriting && a.rf != nil && len(a.rbuf) > 0 {
		rbuf, rf = a.rbuf, a.rf
		a.rbuf = nil
	}
	a.mu.Unlock()
	_, err := f.Write(buf)
	var rerr error
	if rf != nil {
		_, rerr = rf.Write(rbuf)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if rerr != nil {
		a.abort = true
	}
	if err != nil {
		a.err = fmt.Errorf("kv: write %s: %w", a.man.Incr, err)
		a.lastWr = "err"
		a.log.Warn("kv: append-only file write failed", "err", err)
		return a.err
	}
	if f == a.f {
		a.written += int64(len(buf))
		a.size = a.written
	}
	if cap(buf) <= 4<<20 {
		a.spare = buf[:0]
	}
	return nil
}

func (a *aof) writeLocked() error {
	if len(a.buf) == 0 {
		return a.err
	}
	_, err := a.f.Write(a.buf)
	if err != nil {
		a.err = fmt.Errorf("kv: write %s: %w", a.man.Incr, err)
		a.lastWr = "err"
		a.log.Warn("kv: append-only file write failed", "err", err)
		return a.err
	}
	a.written += int64(len(a.buf))
	a.size = a.written
	if cap(a.buf) > 4<<20 {
		a.buf = nil
	} else {
		a.buf = a.buf[:0]
	}
	if a.rewriting && a.rf != nil && len(a.rbuf) > 0 {
		if _, err := a.rf.Write(a.rbuf); err != nil {
			a.abort = true
		}
		a.rbuf = a.rbuf[:0]
	}
	return nil
}

// waitSynced writes and fsyncs everything appended so far (fsync always);
// concurrent callers share one fsync.
func (a *aof) waitSynced() {
	a.mu.Lock()
	want := a.offset
	a.mu.Unlock()
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	if a.synced >= want {
		return
	}
	a.wmu.Lock()
	a.writeUpTo(want)
	a.mu.Lock()
	upto, f := a.written, a.f
	a.mu.Unlock()
	a.wmu.Unlock()
	if err := f.Sync(); err != nil {
		a.log.Warn("kv: fsync of the append-only file failed", "err", err)
		return
	}
	a.synced = upto
}

// flusher fsyncs each second (everysec) and runs rewrites.
func (a *aof) flusher() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-a.s.stop:
			return
		case <-a.wake:
			a.rewrite()
		case <-t.C:
			a.writeOut()
			if a.policy == FsyncEverySec {
				a.mu.Lock()
				f, upto := a.f, a.written
				a.mu.Unlock()
				a.syncMu.Lock()
				if a.synced < upto {
					if err := f.Sync(); err == nil {
						a.synced = upto
					}
				}
				a.syncMu.Unlock()
			}
			a.mu.Lock()
			grow := a.base+a.size >= a.s.cfg.RewriteMinSize && a.base+a.size >= a.lastSize*(100+int64(a.s.cfg.RewritePercent))/100
			a.mu.Unlock()
			if grow {
				a.rewrite()
			}
		}
	}
}

func (a *aof) startRewrite() bool {
	a.mu.Lock()
	busy := a.rewriting
	a.mu.Unlock()
	if busy {
		return false
	}
	select {
	case a.wake <- struct{}{}:
	default:
	}
	return true
}

func (a *aof) status() aofStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	return aofStatus{rewriting: a.rewriting, rewrites: a.rewrites, lastRewrite: a.lastRewrite, lastWrite: a.lastWr, size: a.size, baseSize: a.base}
}

// rewrite compacts the log shard by shard (see aof).
func (a *aof) rewrite() {
	a.mu.Lock()
	if a.rewriting {
		a.mu.Unlock()
		return
	}
	seq := a.man.Seq + 1
	next := manifest{Seq: seq, Base: fmt.Sprintf("base.%d.aof", seq), Incr: fmt.Sprintf("incr.%d.aof", seq)}
	rf, err := os.OpenFile(filepath.Join(a.dir, next.Incr), os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		a.mu.Unlock()
		a.failRewrite(err)
		return
	}
	a.rewriting, a.abort, a.rf, a.rbuf, a.rLastDB = true, false, rf, nil, -1
	a.dumped = [numShards]bool{}
	a.mu.Unlock()
	t0 := time.Now()
	err = a.dumpBase(filepath.Join(a.dir, next.Base))
	// The switch holds every log lock, in order: no write or fsync of the
	// old file runs across it.
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	a.wmu.Lock()
	defer a.wmu.Unlock()
	a.mu.Lock()
	if err == nil && a.abort {
		err = errors.New("the data set was flushed during the rewrite")
	}
	if err == nil {
		err = a.writeLocked()
	}
	if err == nil {
		err = rf.Sync()
	}
	if err == nil {
		err = durable.SyncDir(a.dir)
	}
	if err == nil {
		err = a.writeManifest(next)
	}
	if err != nil {
		a.rewriting, a.rf = false, nil
		a.mu.Unlock()
		rf.Close()
		os.Remove(filepath.Join(a.dir, next.Base))
		os.Remove(filepath.Join(a.dir, next.Incr))
		a.failRewrite(err)
		return
	}
	old := a.man
	oldF := a.f
	a.f, a.man, a.rf, a.rewriting = rf, next, nil, false
	st, _ := rf.Stat()
	a.size, a.written, a.offset = st.Size(), st.Size(), st.Size()
	if bs, err := os.Stat(filepath.Join(a.dir, next.Base)); err == nil {
		a.base = bs.Size()
	}
	a.lastDB = a.rLastDB
	a.rewrites++
	a.lastRewrite = "ok"
	a.lastSize = a.base + a.size
	a.synced = a.size
	a.mu.Unlock()
	oldF.Close()
	os.Remove(filepath.Join(a.dir, old.Base))
	os.Remove(filepath.Join(a.dir, old.Incr))
	a.s.log.Info("kv: append-only file rewritten", "base", next.Base, "bytes", a.base, "took", time.Since(t0).Round(time.Millisecond))
}

func (a *aof) failRewrite(err error) {
	a.mu.Lock()
	a.lastRewrite = "err"
	a.mu.Unlock()
	a.log.Warn("kv: append-only file rewrite failed; the current log stays in use", "err", err)
}

// dumpBase writes every shard as commands, one shard at a time under its
// own lock; each shard is marked dumped in the same critical section, so
// each later change of it goes to the next incremental file.
func (a *aof) dumpBase(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	var chunk []byte
	for i := range a.s.shards {
		select {
		case <-a.s.stop:
			f.Close()
			return errors.New("server closing")
		default:
		}
		sh := &a.s.shards[i]
		chunk = chunk[:0]
		sh.mu.Lock()
		for db, t := range sh.dbs {
			if t == nil || t.len() == 0 {
				continue
			}
			chunk = resp.AppendCommand(chunk, []byte("SELECT"), strconv.AppendInt(nil, int64(db), 10))
			t.each(func(k string, e *entry) bool {
				for _, c := range rebuildCommands([]byte(k), e) {
					chunk = resp.AppendCommand(chunk, c...)
				}
				return true
			})
		}
		a.mu.Lock()
		a.dumped[i] = true
		a.mu.Unlock()
		sh.mu.Unlock()
		if _, err := bw.Write(chunk); err != nil {
			f.Close()
			return err
		}
		if cap(chunk) > 8<<20 {
			chunk = nil
		}
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// rebuildCommands returns the commands that recreate key's value (and its
// expiry) from nothing, in chunks of at most 512 elements.
func rebuildCommands(key []byte, e *entry) [][][]byte {
	var out [][][]byte
	const chunk = 512
	k := append([]byte(nil), key...)
	switch e.kind {
	case kindString:
		c := [][]byte{[]byte("SET"), k, e.str()}
		if e.exp != 0 {
			c = append(c, []byte("PXAT"), strconv.AppendInt(nil, e.exp, 10))
		}
		return [][][]byte{c}
	case kindHash:
		var c [][]byte
		e.hash().each(func(f string, v []byte) bool {
			if c == nil {
				c = [][]byte{[]byte("HSET"), k}
			}
			c = append(c, []byte(f), v)
			if len(c) >= 2+2*chunk {
				out, c = append(out, c), nil
			}
			return true
		})
		if c != nil {
			out = append(out, c)
		}
	case kindList:
		l := e.list()
		var c [][]byte
		for i := 0; i < l.len(); i++ {
			if c == nil {
				c = [][]byte{[]byte("RPUSH"), k}
			}
			c = append(c, l.at(i))
			if len(c) >= 2+chunk {
				out, c = append(out, c), nil
			}
		}
		if c != nil {
			out = append(out, c)
		}
	case kindSet:
		var c [][]byte
		e.set().d.each(func(m string, _ *struct{}) bool {
			if c == nil {
				c = [][]byte{[]byte("SADD"), k}
			}
			c = append(c, []byte(m))
			if len(c) >= 2+chunk {
				out, c = append(out, c), nil
			}
			return true
		})
		if c != nil {
			out = append(out, c)
		}
	case kindZSet:
		var c [][]byte
		for n := e.zset().zsl.head.level[0].forward; n != nil; n = n.level[0].forward {
			if c == nil {
				c = [][]byte{[]byte("ZADD"), k}
			}
			c = append(c, fmtScoreExact(n.score), []byte(n.ele))
			if len(c) >= 2+2*chunk {
				out, c = append(out, c), nil
			}
		}
		if c != nil {
			out = append(out, c)
		}
	}
	if e.exp != 0 {
		out = append(out, [][]byte{[]byte("PEXPIREAT"), k, strconv.AppendInt(nil, e.exp, 10)})
	}
	return out
}

// close writes and fsyncs what is buffered and closes the file.
func (a *aof) close() error {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	err := a.writeLocked()
	if a.f != nil {
		if e := a.f.Sync(); err == nil {
			err = e
		}
		if e := a.f.Close(); err == nil {
			err = e
		}
		a.f = nil
	}
	if a.rf != nil {
		a.rf.Close()
		a.rf = nil
	}
	return err
}
