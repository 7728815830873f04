package rpc

import (
	"context"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"
)

type num struct{ N int }

func TestServerStreaming(t *testing.T) {
	s, addr := testServer(t, Config{})
	must(t, HandleStream(s, "Count/Up", func(ss *ServerStream[num, num]) error {
		req, err := ss.Recv()
		if err != nil {
			return err
		}
		for i := range req.N {
			if err := ss.Send(&num{N: i}); err != nil {
				return err
			}
		}
		ss.SetTrailer(Metadata{"sent": "yes"})
		return nil
	}))
	c := dial(t, addr)
	st, err := NewStream[num, num](context.Background(), c, "Count/Up")
	must(t, err)
	must(t, st.Send(&num{N: 1000}))
	must(t, st.CloseSend())
	for i := range 1000 {
		m, err := st.Recv()
		if err != nil || m.N != i {
			t.Fatalf("message %d: %+v %v", i, m, err)
		}
	}
	if _, err := st.Recv(); err != io.EOF {
		t.Fatalf("want io.EOF, got %v", err)
	}
	if st.Trailer()["sent"] != "yes" {
		t.Fatalf("trailer %v", st.Trailer())
	}
}

// A SendBatch holds the messages of several streams back until Flush, then
// they arrive in order.
func TestSendBatch(t *testing.T) {
	s, addr := testServer(t, Config{})
	queued := make(chan struct{})
	var b SendBatch
	var streams []*ServerStream[num, num]
	must(t, HandleStream(s, "Batch/Hold", func(ss *ServerStream[num, num]) error {
		if _, err := ss.Recv(); err != nil {
			return err
		}
		queued <- struct{}{}
		<-ss.Context().Done()
		return nil
	}))
	c := dial(t, addr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var clients []*ClientStream[num, num]
	for range 2 {
		st, err := NewStream[num, num](ctx, c, "Batch/Hold")
		must(t, err)
		must(t, st.Send(&num{}))
		clients = append(clients, st)
	}
	for range 2 {
		<-queued
	}
	// The handlers are parked; send through the server's streams directly.
	s.mu.Lock()
	for sc := range s.conns {
		sc.mu.Lock()
		for _, st := range sc.streams {
			streams = append(streams, &ServerStream[num, num]{st: st})
		}
		sc.mu.Unlock()
	}
	s.mu.Unlock()
	if len(streams) != 2 {
		t.Fatalf("%d server streams", len(streams))
	}
	for i := range 3 {
		for _, ss := range streams {
			if ok, err := ss.TrySendBatch(&b, &num{N: i}); !ok || err != nil {
				t.Fatalf("TrySendBatch: %v %v", ok, err)
			}
		}
	}
	got := make(chan int, 6)
	for _, st := range clients {
		go func() {
			for range 3 {
				m, err := st.Recv()
				if err != nil {
					return
				}
				got <- m.N
			}
		}()
	}
	select {
	case n := <-got:
		t.Fatalf("message %d arrived before Flush", n)
	case <-time.After(100 * time.Millisecond):
	}
	b.Flush()
	var seq []int
	for range 6 {
		select {
		case n := <-got:
			seq = append(seq, n)
		case <-time.After(5 * time.Second):
			t.Fatalf("after Flush, only %v arrived", seq)
		}
	}
}

func TestBidiStreamAndErrors(t *testing.T) {
	s, addr := testServer(t, Config{})
	must(t, HandleStream(s, "Chat/Echo", func(ss *ServerStream[echoReq, echoResp]) error {
		for {
			m, err := ss.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if m.Fail != OK {
				return Errorf(m.Fail, "stream asked to fail")
			}
			if err := ss.Send(&echoResp{Text: strings.ToUpper(m.Text)}); err != nil {
				return err
			}
		}
	}))
	c := dial(t, addr)
	st, err := NewStream[echoReq, echoResp](context.Background(), c, "Chat/Echo")
	must(t, err)
	for _, w := range []string{"a", "b", "c"} {
		must(t, st.Send(&echoReq{Text: w}))
		r, err := st.Recv()
		if err != nil || r.Text != strings.ToUpper(w) {
			t.Fatalf("%v %v", r, err)
		}
	}
	must(t, st.Send(&echoReq{Fail: Aborted}))
	if _, err := st.Recv(); CodeOf(err) != Aborted {
		t.Fatalf("want Aborted, got %v", err)
	}
	// A unary call to a stream method and the reverse are refused.
	if _, err := Call[echoResp](context.Background(), c, "Chat/Echo", &echoReq{}); CodeOf(err) != InvalidArgument {
		t.Fatalf("unary to stream: %v", err)
	}
	st2, err := NewStream[echoReq, echoResp](context.Background(), c, "Echo/Echo")
	must(t, err)
	if _, err := st2.Recv(); CodeOf(err) != InvalidArgument {
		t.Fatalf("stream to unary: %v", err)
	}
}

// A client that does not read must not make the server's memory grow: the
// server's Send blocks once the window is full.
func TestStreamFlowControl(t *testing.T) {
	s, addr := testServer(t, Config{StreamWindow: 64 << 10})
	sent := make(chan int, 1)
	blocked := make(chan struct{})
	must(t, HandleStream(s, "Flood/Out", func(ss *ServerStream[num, echoResp]) error {
		payload := strings.Repeat("x", 1024)
		n := 0
		defer func() { sent <- n }()
		for {
			ctx, cancel := context.WithTimeout(ss.Context(), 200*time.Millisecond)
			done := make(chan error, 1)
			go func() { done <- ss.Send(&echoResp{Text: payload}) }()
			select {
			case err := <-done:
				cancel()
				if err != nil {
					return err
				}
				n++
			case <-ctx.Done():
				cancel()
				close(blocked)
				return <-done
			}
		}
	}))
	c := dial(t, addr, func(o *dialOptions) { o.streamWindow = 64 << 10 })
	ctx, cancel := context.WithCancel(context.Background())
	st, err := NewStream[num, echoResp](ctx, c, "Flood/Out")
	must(t, err)
	must(t, st.Send(&num{}))
	select {
	case <-blocked:
	case <-time.After(10 * time.Second):
		t.Fatal("server never blocked: flow control is not working")
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	// Now read everything: the window reopens and the sender resumes.
	got := 0
	for got < 64 {
		if _, err := st.Recv(); err != nil {
			t.Fatalf("after %d: %v", got, err)
		}
		got++
	}
	cancel() // aborts the stream; the server's Send returns
	n := <-sent
	if n > 64+5 || n < 50 {
		t.Fatalf("server sent %d 1 KiB messages into a 64 KiB window before blocking", n)
	}
	if _, err := st.Recv(); err == nil {
		t.Fatal("want an error after cancel")
	}
}

func TestStreamCancelReachesServer(t *testing.T) {
	s, addr := testServer(t, Config{})
	canceled := make(chan error, 1)
	must(t, HandleStream(s, "Wait/Forever", func(ss *ServerStream[num, num]) error {
		<-ss.Context().Done()
		canceled <- ss.Context().Err()
		return ss.Context().Err()
	}))
	c := dial(t, addr)
	ctx, cancel := context.WithCancel(context.Background())
	st, err := NewStream[num, num](ctx, c, "Wait/Forever")
	must(t, err)
	must(t, st.Send(&num{}))
	wait.For(t, 5*time.Second, "the stream to reach the handler", func() bool { return s.InFlight() == 1 })
	cancel()
	select {
	case err := <-canceled:
		if !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server stream not canceled")
	}
	if _, err := st.Recv(); CodeOf(err) != Canceled {
		t.Fatalf("client Recv after cancel: %v", err)
	}
}
