package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/kv/resp"
)

// client is one connection. On Linux an event loop (loop_linux.go) reads
// its commands, runs them and writes the replies; a command that may wait
// (BLPOP, AUTH through the platform) runs on a goroutine of its own while
// the loop serves the others. Elsewhere (or with Config.IOLoops < 0) its own
// goroutine does all of it, and once it subscribes a second goroutine
// writes what other clients send it. Either way a slow subscriber never
// holds up a publisher: it is cut off when its queue passes the limit.
type client struct {
	s            *Server
	id           int64
	conn         net.Conn     // goroutine mode
	rd           *resp.Reader // goroutine mode
	lim          *resp.Limits // the request limits (tightened until AUTH)
	raddr, laddr string
	out          []byte
	lastErr      bool
	x            ctx

	// Event-loop mode; owned by the loop goroutine (out too, except while
	// busy, when the goroutine running the command owns it).
	lp         *loop
	fd         int
	limStore   resp.Limits
	args       [][]byte
	qbuf       []byte // bytes read and not yet run (a partial command, or what waits while busy)
	need       int    // len(qbuf) before a parse can succeed
	wbuf       []byte // replies not yet written to the socket
	busy       bool   // a command runs on its own goroutine
	dirty      bool   // in the loop's list of clients with output
	closeAfter bool   // close once wbuf is written (QUIT, a protocol error)
	closed     bool
	peerShut   bool   // the peer shut its side down while we were not reading
	events     uint32 // the epoll interest set now registered
	needSync   bool   // a write under fsync always: sync the log before replying

	// Read by CLIENT LIST from other goroutines.
	mu      sync.Mutex
	name    string
	user    string
	lastCmd atomic.Pointer[cmdSpec]
	created time.Time
	lastAt  atomic.Int64 // Unix ms of the last command

	db     int
	v3     bool
	authed bool

	multi    []queued // queued commands while in MULTI (nil outside)
	inMulti  bool
	multiErr bool

	watched    []wkey
	watchDirty atomic.Bool

	trk        atomic.Pointer[tracking] // CLIENT TRACKING mode; nil when off
	cachingSet int8                     // CLIENT CACHING yes (1) / no (-1), for the next command
	caching    int8                     // … as it applies to the command running

	subs, psubs map[string]struct{} // guarded by pubsub.mu

	outMu       sync.Mutex
	async       atomic.Bool // subscribed: replies go through pending (and in goroutine mode the writer goroutine; set under outMu)
	pending     []byte      // guarded by outMu
	flushPosted bool        // loop mode: the loop has been asked to write pending (guarded by outMu)
	wake        chan struct{}
	dead        atomic.Bool
	closing     chan struct{}
	once        sync.Once
	blocked     atomic.Bool
}

type queued struct {
	spec *cmdSpec
	args [][]byte
}

func newClient(s *Server, conn net.Conn) *client {
	c := &client{s: s, id: s.nextID.Add(1), conn: conn, created: time.Now(), closing: make(chan struct{}), fd: -1}
	c.rd = resp.NewReader(conn, 16<<10)
	c.lim = &c.rd.Limits
	c.raddr, c.laddr = conn.RemoteAddr().String(), conn.LocalAddr().String()
	c.init()
	return c
}

func (c *client) init() {
	c.authed = !c.s.needAuth()
	if !c.authed {
		c.restrict()
	}
	c.x.s, c.x.c = c.s, c
	c.lastAt.Store(nowMs())
}

// restrict sets the limits of a client that has not authenticated: small
// requests (Redis's limits for unauthenticated clients), so a stranger
// cannot make us hold memory.
func (c *client) restrict() {
	c.lim.MaxArgs, c.lim.MaxBulk, c.lim.MaxRequest = 10, 16<<10, 64<<10
}

// kill closes the connection (in loop mode the loop does, soon); serve
// then returns, and a command waiting on its own goroutine gives up.
func (c *client) kill() {
	c.once.Do(func() {
		c.dead.Store(true)
		close(c.closing)
		if c.lp != nil {
			c.lp.post(loopOp{kind: opKill, c: c})
			return
		}
		c.conn.Close()
	})
}

// teardown forgets a closed client everywhere.
func (c *client) teardown() {
	if c.trk.Swap(nil) != nil {
		c.s.trackers.drop(c)
		c.s.trackers.active.Add(-1)
	}
	c.s.trackers.byID.Delete(c.id)
	c.s.unwatchAll(c)
	c.s.pubsub.unsubscribeAll(c)
	c.s.removeClient(c)
}

func (c *client) serve() {
	defer func() {
		c.kill()
		c.teardown()
	}()
	for {
		if c.rd.Buffered() == 0 { // about to wait for the peer
			if d := c.s.cfg.IdleTimeout; d > 0 && !c.isSubscriber() {
				c.conn.SetReadDeadline(time.Now().Add(d))
			} else {
				c.conn.SetReadDeadline(time.Time{})
			}
		}
		args, err := c.rd.ReadCommand()
		if err != nil {
			if resp.IsProtocol(err) {
				c.out = resp.AppendError(c.out, "ERR "+err.Error())
				c.flush()
			} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !c.dead.Load() {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					c.s.log.Debug("kv: idle connection closed", "client", c.id)
				}
			}
			return
		}
		if len(args) == 0 {
			continue
		}
		quit := c.exec(args)
		if quit || c.rd.Buffered() == 0 || len(c.out) > 64<<10 {
			if !c.flush() || quit {
				return
			}
		}
	}
}

// flush writes the replies gathered so far (in loop mode: hands them to
// the loop, ahead of anything pushed later).
func (c *client) flush() bool {
	if len(c.out) == 0 {
		return true
	}
	if c.lp != nil {
		c.lp.takeOut(c)
		c.lp.markDirty(c)
		return true
	}
	if a := c.s.aof; a != nil {
		// The log reaches the file before the replies leave: a crash of
		// the process loses nothing a client was told succeeded.
		a.writeOut()
	}
	ok := c.write(c.out)
	if cap(c.out) > 1<<20 {
		c.out = nil
	} else {
		c.out = c.out[:0]
	}
	return ok
}

func (c *client) write(b []byte) bool {
	c.outMu.Lock()
	if c.async.Load() {
		c.pending = append(c.pending, b...)
		c.outMu.Unlock()
		c.signal()
		return !c.dead.Load()
	}
	c.outMu.Unlock()
	if _, err := c.conn.Write(b); err != nil {
		c.kill()
		return false
	}
	return true
}

// push queues bytes from another goroutine (a published message, a woken
// BLPOP reply). A client whose queue passes 32 MB is disconnected, as
// Redis's client-output-buffer-limit for pub/sub does.
func (c *client) push(b []byte) {
	c.outMu.Lock()
	if !c.async.Load() {
		c.startAsyncLocked()
	}
	if len(c.pending)+len(b) > 32<<20 {
		c.outMu.Unlock()
		c.s.log.Warn("kv: client output queue over 32 MB: disconnected", "client", c.id)
		c.kill()
		return
	}
	c.pending = append(c.pending, b...)
	if c.lp != nil {
		post := !c.flushPosted
		c.flushPosted = true
		c.outMu.Unlock()
		if post {
			c.lp.post(loopOp{kind: opFlush, c: c})
		}
		return
	}
	c.outMu.Unlock()
	c.signal()
}

func (c *client) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// goAsync routes this client's output through the writer goroutine.
func (c *client) goAsync() {
	c.outMu.Lock()
	if !c.async.Load() {
		c.startAsyncLocked()
	}
	c.outMu.Unlock()
}

func (c *client) startAsyncLocked() {
	c.async.Store(true)
	if c.lp != nil {
		return // the loop writes pending
	}
	c.wake = make(chan struct{}, 1)
	c.s.goFunc(c.writer)
}

func (c *client) writer() {
	var buf []byte
	for {
		select {
		case <-c.wake:
		case <-c.closing:
			return
		}
		c.outMu.Lock()
		buf, c.pending = c.pending, buf[:0]
		c.outMu.Unlock()
		if len(buf) == 0 {
			continue
		}
		c.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.conn.Write(buf); err != nil {
			c.kill()
			return
		}
	}
}

func (c *client) isSubscriber() bool {
	c.s.pubsub.mu.Lock()
	defer c.s.pubsub.mu.Unlock()
	return len(c.subs)+len(c.psubs) > 0
}

// lower copies name into buf in lower case.
func lower(buf []byte, name []byte) []byte {
	buf = buf[:0]
	for _, b := range name {
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		buf = append(buf, b)
	}
	return buf
}

// exec runs one command; it reports whether the connection should close
// (QUIT) once the reply is out.
func (c *client) exec(args [][]byte) bool {
	var nb [32]byte
	name := args[0]
	spec := commands[string(lower(nb[:0], name))]
	if len(name) > len(nb) {
		spec = nil
	}
	if spec == nil {
		if c.inMulti {
			c.multiErr = true
		}
		c.x.c = c
		c.x.err("ERR unknown command '" + clip(string(name), 128) + "', with args beginning with: " + argsPreview(args[1:]))
		return false
	}
	if !c.authed && spec.flags&flagNoAuth == 0 {
		c.out = resp.AppendError(c.out, "NOAUTH Authentication required.")
		return false
	}
	if !spec.arityOK(len(args)) {
		if c.inMulti {
			c.multiErr = true
		}
		c.out = resp.AppendError(c.out, "ERR wrong number of arguments for '"+spec.name+"' command")
		return false
	}
	if c.inMulti && spec.flags&flagMultiCtl == 0 {
		if spec.flags&flagNoMulti != 0 {
			c.multiErr = true
			c.out = resp.AppendError(c.out, "ERR Command not allowed inside a transaction")
			return false
		}
		c.multi = append(c.multi, queued{spec: spec, args: copyArgs(args)})
		c.out = append(c.out, "+QUEUED\r\n"...)
		return false
	}
	if !c.v3 && spec.flags&flagPubSubOK == 0 && c.isSubscriberFast() {
		c.out = resp.AppendError(c.out, "ERR Can't execute '"+spec.name+"': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")
		return false
	}
	if spec.name == "quit" {
		c.out = append(c.out, "+OK\r\n"...)
		return true
	}
	if c.lp != nil && spec.flags&flagMayWait != 0 && (spec.flags&flagNoAuth == 0 || c.s.cfg.Authenticate != nil) {
		c.lp.runAside(c, spec, args)
		return false
	}
	c.run(spec, args)
	return c.dead.Load()
}

func (c *client) isSubscriberFast() bool {
	if !c.async.Load() {
		return false
	}
	return c.isSubscriber()
}

// run executes spec with its shards locked.
func (c *client) run(spec *cmdSpec, args [][]byte) {
	s := c.s
	x := &c.x
	x.reset()
	x.db = c.db
	x.c = c
	c.lastErr = false
	if spec.flags&flagWrite != 0 && s.maxMem.Load() > 0 && spec.flags&flagDenyOOM != 0 {
		if !s.freeMemory() {
			x.err("OOM command not allowed when used memory > 'maxmemory'.")
			return
		}
	}
	c.caching, c.cachingSet = c.cachingSet, 0
	t0 := time.Now()
	x.now = msAt(t0)
	c.lastAt.Store(x.now)
	if spec.flags&flagNoLock != 0 {
		spec.fn(x, args)
	} else {
		mask := spec.shardMask(args)
		s.lockMask(mask)
		x.locked = mask
		x.memo = memo{} // a new lock section: what the memo points at may be gone
		spec.fn(x, args)
		if spec.flags&flagReadOnly != 0 && c.trk.Load() != nil {
			x.remember(spec, args)
		}
		if spec.flags&flagWrite != 0 && spec.flags&flagCustomProp == 0 {
			x.propAll = true
		}
		x.finish(spec, args)
		s.unlockMask(mask)
	}
	x.flushSelfInval()
	d := time.Since(t0)
	s.stats.record(spec, d, c.lastErr)
	if d >= s.cfg.SlowLogThreshold {
		s.slow.add(c, args, t0, d)
	}
	if spec.flags&flagWrite != 0 && s.aof != nil && s.aof.policy == FsyncAlways && len(x.touched)+len(x.prop) > 0 {
		if c.lp != nil && !c.busy {
			c.needSync = true // the loop syncs once for all its clients before it replies
		} else {
			s.aof.waitSynced()
		}
	}
	if spec.flags&flagSetLast != 0 {
		c.lastCmd.Store(spec)
	}
}

func copyArgs(args [][]byte) [][]byte {
	out := make([][]byte, len(args))
	for i, a := range args {
		out[i] = bytes.Clone(a)
		if out[i] == nil {
			out[i] = []byte{}
		}
	}
	return out
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func argsPreview(args [][]byte) string {
	var b strings.Builder
	for _, a := range args {
		if b.Len() > 128 {
			break
		}
		b.WriteByte('\'')
		b.WriteString(clip(string(a), 128))
		b.WriteString("' ")
	}
	return b.String()
}

// checkAuth checks AUTH's or HELLO's credentials.
func (s *Server) checkAuth(user, pass string) bool {
	if s.cfg.Authenticate != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.cfg.Authenticate(ctx, user, pass); err == nil {
			return true
		}
	}
	if s.cfg.Password != "" && (user == "" || user == "default") {
		return constantEq(pass, s.cfg.Password)
	}
	return false
}

func constantEq(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := 0; i < len(a); i++ {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

func (c *client) setAuthed(user string) {
	c.authed = true
	c.lim.MaxArgs, c.lim.MaxBulk, c.lim.MaxRequest = 0, 0, 0
	c.mu.Lock()
	c.user = user
	c.mu.Unlock()
}
