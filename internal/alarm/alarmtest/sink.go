// Package alarmtest is a minimal SMTP server for tests of alarm e-mails:
// it accepts any message on 127.0.0.1 and hands over its recipients and
// text.
package alarmtest

import (
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// MailSink is the server; Mail receives "To <recipients>\n<text>" per
// message.
type MailSink struct {
	ln   net.Listener
	Mail chan string
}

// NewMailSink listens on 127.0.0.1:0 until the test ends.
func NewMailSink(t testing.TB) *MailSink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &MailSink{ln: ln, Mail: make(chan string, 16)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go m.serve(c)
		}
	}()
	return m
}

// Addr is the sink's host:port.
func (m *MailSink) Addr() string { return m.ln.Addr().String() }

func (m *MailSink) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(c)
	_ = tp.PrintfLine("220 sink ESMTP")
	var rcpt []string
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.SplitN(line, " ", 2)[0])
		switch {
		case cmd == "EHLO" || cmd == "HELO":
			_ = tp.PrintfLine("250 sink")
		case strings.HasPrefix(strings.ToUpper(line), "RCPT TO:"):
			rcpt = append(rcpt, strings.Trim(line[8:], "<> "))
			_ = tp.PrintfLine("250 ok")
		case cmd == "DATA":
			_ = tp.PrintfLine("354 go on")
			body, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			select {
			case m.Mail <- "To " + strings.Join(rcpt, ",") + "\n" + string(body):
			default:
			}
			_ = tp.PrintfLine("250 queued")
		case cmd == "QUIT":
			_ = tp.PrintfLine("221 bye")
			return
		default:
			_ = tp.PrintfLine("250 ok")
		}
	}
}
