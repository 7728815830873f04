package console_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/chromedp/chromedp"

	"github.com/tangram-dev/tangram/mq"
	"github.com/tangram-dev/tangram/server/servertest"
)

// TestConsoleMQBrowser drives the message queue pages in headless
// Chromium: brokers, topics and a group's lag; look-up by key; a dead
// letter re-sent from the group's page and consumed.
func TestConsoleMQBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	h := servertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := mq.NewClient(ctx, mq.Config{Servers: []string{h.Srv.RPCAddr()}, Token: servertest.AdminToken})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.CreateTopic(ctx, "orders", 2, false))
	p, err := c.NewProducer(mq.ProducerConfig{})
	must(err)
	defer p.Close()
	for _, k := range []string{"order-1", "order-2", "poison"} {
		_, err := p.Send(ctx, &mq.Message{Topic: "orders", Body: []byte("body of " + k), Keys: []string{k}, ShardingKey: k})
		must(err)
	}
	// An ordered consumer gives up on "poison" at once (MaxRetry 1): it
	// lands in the dead-letter topic.
	resent := make(chan struct{})
	var poisonSeen int
	cs, err := c.NewConsumer(mq.ConsumerConfig{Group: "billing", Orderly: true, MaxRetry: 1, Heartbeat: 200 * time.Millisecond, LongPoll: time.Second})
	must(err)
	must(cs.Subscribe("orders", nil, func(ctx context.Context, m *mq.Message) error {
		if m.Keys[0] == "poison" {
			poisonSeen++
			if poisonSeen == 2 {
				close(resent)
				return nil
			}
			return errors.New("cannot bill this")
		}
		return nil
	}))
	must(cs.Start(ctx))
	defer cs.Close()

	bctx := browser(t)
	page := func() string {
		html, _ := chromedp.Run(context.WithoutCancel(bctx), chromedp.OuterHTML(chromedp.CSS("body")))
		return html
	}
	step := func(name string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, actions...); err != nil {
			t.Fatalf("%s: %v\npage: %.3000s", name, err, page())
		}
	}
	waitText := func(path, sel, want string) {
		t.Helper()
		var s string
		var err error
		first := true
		if !wait.Until(20*time.Second, func() bool {
			if !first && path != "" { // the page shows what was true when it loaded
				_ = chromedp.Do(bctx, chromedp.Navigate(h.URL+path))
			}
			first = false
			s, err = chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
			return err == nil && strings.Contains(s, want)
		}) {
			t.Fatalf("%s never showed %q (last %q, %v)\npage: %.3000s", sel, want, s, err, page())
		}
	}
	id := func(s string) chromedp.ID { return chromedp.ID(s) }
	step("sign in", chromedp.Navigate(h.URL+"/mq"), chromedp.WaitVisible(id("login")),
		chromedp.SetValue(id("user"), "admin"), chromedp.SetValue(id("secret"), h.Token), chromedp.Click(id("login")),
		chromedp.WaitVisible(id("whoami")))
	step("overview", chromedp.Navigate(h.URL+"/mq"), chromedp.WaitVisible(id("brokers")))
	waitText("/mq", "#brokers", "master")
	waitText("/mq", "#topics", "orders")
	waitText("/mq", "#groups", "billing")
	waitText("/mq", "#lag-billing", "0")
	step("topic page", chromedp.Click(id("topic-orders")), chromedp.WaitVisible(id("queues")),
		chromedp.SetValue(id("lookup-key"), "order-2"), chromedp.Click(id("lookup")), chromedp.WaitVisible(id("found")))
	waitText("", "#found", "body of order-2")
	step("group page", chromedp.Navigate(h.URL+"/mq/groups/billing"), chromedp.WaitVisible(id("dead")))
	waitText("/mq/groups/billing", "#dead", "body of poison")
	step("resend", chromedp.Click(chromedp.CSS("button.resend")))
	waitText("", "#flash", "resent")
	select {
	case <-resent:
	case <-time.After(20 * time.Second):
		t.Fatal("the re-sent dead letter was not consumed")
	}
	for _, path := range []string{"/mq", "/mq/topics/orders", "/mq/groups/billing"} {
		fits(t, bctx, h.URL, path)
	}
}
