package park

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"go.uber.org/goleak"
)

// server serves /park (parks and answers after the delay given in the
// query) and /plain on one listener plus the parker's.
func server(t *testing.T) (string, *Parker, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := New(ln.Addr())
	var wg sync.WaitGroup
	mux := http.NewServeMux()
	mux.HandleFunc("/park", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("after"))
		c, err := p.Park(w, r)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		wg.Add(1)
		time.AfterFunc(d, func() {
			defer wg.Done()
			c.Respond(200, "text/plain", []byte("parked "+r.URL.Query().Get("id")))
		})
	})
	mux.HandleFunc("/plain", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "plain") })
	srv := &http.Server{Handler: mux, ConnState: p.ConnState}
	for _, l := range []net.Listener{ln, p.Listener()} {
		go srv.Serve(l)
	}
	return "http://" + ln.Addr().String(), p, func() {
		wg.Wait()
		p.Close()
		p.CloseIdle()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}
}

func TestParkKeepAlive(t *testing.T) {
	defer goleak.VerifyNone(t)
	base, _, stop := server(t)
	var conns sync.Map
	tr := &http.Transport{DialContext: func(ctx context.Context, n, a string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, n, a)
		if err == nil {
			conns.Store(c.LocalAddr().String(), true)
		}
		return c, err
	}}
	hc := &http.Client{Transport: tr}
	get := func(path string) string {
		resp, err := hc.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	for i := 0; i < 3; i++ {
		if got := get(fmt.Sprintf("/park?after=20ms&id=%d", i)); got != fmt.Sprintf("parked %d", i) {
			t.Fatalf("parked answer %q", got)
		}
		if got := get("/plain"); got != "plain" {
			t.Fatalf("plain after park: %q", got)
		}
	}
	n := 0
	conns.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Fatalf("keep-alive broken: %d connections for 6 requests", n)
	}
	tr.CloseIdleConnections()
	start := time.Now()
	stop()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
}

// TestParkPipelined: a request the client pipelined behind the parked one
// is served after the answer, from the bytes the server had read ahead.
func TestParkPipelined(t *testing.T) {
	defer goleak.VerifyNone(t)
	base, _, stop := server(t)
	defer stop()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /park?after=10ms&id=a HTTP/1.1\r\nHost: x\r\n\r\nGET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	for _, want := range []string{"parked a", "plain"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != want {
			t.Fatalf("got %q want %q", b, want)
		}
	}
	// Connection: close is honoured.
	fmt.Fprintf(c, "GET /park?after=1ms&id=b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	if !resp.Close {
		t.Fatal("response to Connection: close does not close")
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("connection still open: %v", err)
	}
}

// TestParkIdleHangup: an answered connection waits outside the HTTP server
// (on Linux) and is released when its client hangs up.
func TestParkIdleHangup(t *testing.T) {
	defer goleak.VerifyNone(t)
	base, p, stop := server(t)
	defer stop()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /park?after=1ms&id=z HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	wait.For(t, 2*time.Second, "the answered connection to be idle outside the server", func() bool { return p.Idle() == 1 || runtime.GOOS != "linux" })
	c.Close()
	wait.For(t, 2*time.Second, "the hung-up connection to be dropped", func() bool { return p.Idle() == 0 })
}
