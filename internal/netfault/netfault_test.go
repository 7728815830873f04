package netfault

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func TestPartitionHoldsAndHealDelivers(t *testing.T) {
	p := New(t, echoServer(t))
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	c.Write([]byte("one\n"))
	if l, _ := r.ReadString('\n'); l != "one\n" {
		t.Fatalf("got %q", l)
	}
	p.Partition()
	c.Write([]byte("two\n"))
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("bytes crossed a partition")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	p.Heal()
	if l, err := r.ReadString('\n'); l != "two\n" {
		t.Fatalf("after heal got %q %v: held bytes were lost", l, err)
	}
}

// Down closes live connections and refuses new ones; Up lets them in.
func TestDownClosesAndUpAccepts(t *testing.T) {
	p := New(t, echoServer(t))
	echo := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("hi\n")); err != nil {
			return err
		}
		_, err := bufio.NewReader(c).ReadString('\n')
		return err
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := echo(c); err != nil {
		t.Fatal(err)
	}
	p.Down()
	if err := echo(c); err == nil {
		t.Fatal("a connection lived through Down")
	}
	c2, err := net.Dial("tcp", p.Addr())
	if err == nil {
		if err := echo(c2); err == nil {
			t.Fatal("a new connection worked while down")
		}
		c2.Close()
	}
	p.Up()
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if err := echo(c3); err != nil {
		t.Fatalf("after Up: %v", err)
	}
}
