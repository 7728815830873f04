package server

import (
	"context"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/config"

	"github.com/tangram-dev/tangram/internal/park"
)

// A parked watch is a long poll whose connection has been taken from
// net/http (see package park): no goroutine, buffers or request are held
// while it waits. A release, the hold timer or shutdown answers it from a
// short-lived goroutine owned by the Server, and the connection goes back to
// the HTTP server for the client's next request.
type parkedWatch struct {
	s        *Server
	w        *watch
	conn     *park.Conn
	waiter   atomic.Pointer[waiter]
	timer    atomic.Pointer[time.Timer]
	answered atomic.Bool
}

// parkWatch parks the request's connection until w's namespaces change. It
// reports false, leaving the request untouched, when the connection cannot
// be parked (HTTP/2, no parker): the caller then blocks in Watch.
func (s *Server) parkWatch(rw http.ResponseWriter, r *http.Request, w *watch) bool {
	if s.cfg.Parker == nil {
		return false
	}
	pc, err := s.cfg.Parker.Park(rw, r)
	if err != nil {
		return false
	}
	pw := &parkedWatch{s: s, w: w, conn: pc}
	// Watch for a hang-up before subscribing: once subscribed, a release
	// may answer the connection (and hand it on) at any moment.
	pc.OnHangup(pw.hangup)
	wt, ok := s.hub.subscribe(w.groups, pw)
	if !ok {
		pw.finish(http.StatusServiceUnavailable, nil)
		return true
	}
	pw.waiter.Store(wt)
	pw.timer.Store(time.AfterFunc(w.hold, pw.expired))
	// A release may have landed between the caller's check and the subscription.
	if out := s.changed(w); len(out) > 0 && s.hub.unsubscribe(wt) {
		pw.finish(http.StatusOK, out)
	}
	return true
}

// notify records releases and answers the watches they fire.
func (s *Server) notify(notes []notice) {
	for _, n := range notes {
		if n.kind != "" {
			s.metrics.releases.WithLabelValues(n.kind).Inc()
		}
	}
	fired := s.hub.publish(notes)
	s.metrics.answers.WithLabelValues("change").Add(float64(len(fired)))
	s.fanout(fired, http.StatusOK)
}

// fanout answers fired parked watches. A few owned goroutines (one per
// CPU) write every answer first; only when all are written are the
// connections handed back to the HTTP server, whose per-connection set-up
// would otherwise delay the answers still queued.
func (s *Server) fanout(fired []*parkedWatch, status int) {
	if len(fired) == 0 {
		return
	}
	workers := min(runtime.GOMAXPROCS(0), (len(fired)+63)/64)
	per := (len(fired) + workers - 1) / workers
	var written sync.WaitGroup
	for i := 0; i < len(fired); i += per {
		chunk := fired[i:min(i+per, len(fired))]
		written.Add(1)
		s.goOwned(func() {
			defer written.Done()
			// Watchers of a namespace usually hold the same ids and get the
			// same answer: format each distinct answer once.
			cache := map[string]*park.Response{}
			memo := newAnswerMemo()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, pw := range chunk {
				if status != http.StatusOK {
					pw.answer(status, nil)
					continue
				}
				key, body := s.render(ctx, pw.w, s.changed(pw.w), memo)
				resp := cache[key]
				if resp == nil {
					resp = park.NewResponse(http.StatusOK, "application/json", body)
					cache[key] = resp
				}
				pw.send(resp)
			}
		})
	}
	s.goOwned(func() {
		written.Wait()
		for _, pw := range fired {
			pw.conn.Release()
		}
	})
}

// hangup drops a parked watch whose client closed the connection, so a
// vanished client does not hold a watch until its hold ends.
func (pw *parkedWatch) hangup() {
	if wt := pw.waiter.Load(); wt == nil || !pw.s.hub.unsubscribe(wt) {
		return // already answered
	}
	if !pw.answered.CompareAndSwap(false, true) {
		return
	}
	if t := pw.timer.Load(); t != nil {
		t.Stop()
	}
	pw.s.metrics.answers.WithLabelValues("hangup").Inc()
	pw.conn.Close()
}

// expired answers "no change" when the hold ends.
func (pw *parkedWatch) expired() {
	if wt := pw.waiter.Load(); wt == nil || !pw.s.hub.unsubscribe(wt) {
		return // already answered
	}
	pw.s.metrics.answers.WithLabelValues("timeout").Inc()
	pw.finish(http.StatusOK, nil)
}

func (pw *parkedWatch) finish(status int, changes []config.Notification) {
	pw.answer(status, changes)
	pw.conn.Release()
}

// answer writes the response (once); Release hands the connection back.
func (pw *parkedWatch) answer(status int, changes []config.Notification) {
	if status != http.StatusOK {
		pw.send(park.NewResponse(status, "application/json", []byte(`{"error":{"code":"unavailable","message":"server is shutting down; reconnect"}}`+"\n")))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, body := pw.s.render(ctx, pw.w, changes, nil)
	pw.send(park.NewResponse(status, "application/json", body))
}

func (pw *parkedWatch) send(r *park.Response) {
	if !pw.answered.CompareAndSwap(false, true) {
		return
	}
	if t := pw.timer.Load(); t != nil {
		t.Stop()
	}
	pw.conn.Send(r)
}

// answerKey identifies a watch answer: the watched namespaces and the ids
// answered (the answer lists only the changed ones, with their new ids).
func answerKey(w *watch, changes []config.Notification) string {
	b := make([]byte, 0, 64)
	b = append(b, w.req.Env...)
	b = append(b, '|')
	b = append(b, w.req.App...)
	b = append(b, '|')
	b = append(b, w.req.Cluster...)
	for _, n := range changes {
		b = append(b, '|')
		b = append(b, n.NS...)
		b = append(b, ':')
		b = strconv.AppendInt(b, n.ID, 10)
	}
	return string(b)
}

// goOwned runs fn on a goroutine that Close waits for; after Close has
// begun waiting it runs fn inline instead.
func (s *Server) goOwned(fn func()) {
	s.ownMu.Lock()
	if s.draining {
		s.ownMu.Unlock()
		fn()
		return
	}
	s.owned.Add(1)
	s.ownMu.Unlock()
	go func() {
		defer s.owned.Done()
		fn()
	}()
}

// changesJSON renders a watch answer by hand: it is the hot path of a
// release fanning out to every watcher, and namespace names are validated
// to need no escaping.
func changesJSON(changes []config.Notification) []byte {
	buf := make([]byte, 0, 32+48*len(changes))
	buf = append(buf, `{"changes":[`...)
	for i, n := range changes {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"ns":"`...)
		buf = append(buf, n.NS...)
		buf = append(buf, `","id":`...)
		buf = strconv.AppendInt(buf, n.ID, 10)
		buf = append(buf, '}')
	}
	return append(buf, "]}\n"...)
}
