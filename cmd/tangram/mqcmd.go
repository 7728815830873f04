package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/mq"
)

// rpcTarget is the server's RPC address: --rpc-server, TANGRAM_RPC, or
// the --server URL's host on port 7071.
func (g *globals) rpcTarget(flag string) string {
	if flag != "" {
		return flag
	}
	if v := os.Getenv("TANGRAM_RPC"); v != "" {
		return v
	}
	host := "127.0.0.1"
	if u, err := url.Parse(g.server); err == nil && u.Hostname() != "" {
		host = u.Hostname()
	}
	return net.JoinHostPort(host, "7071")
}

func newMQCmd(g *globals) *cobra.Command {
	var rpcServer string
	cmd := &cobra.Command{Use: "mq", Short: "Message queue: topics, send, consume, look-up, groups, dead letters"}
	cmd.PersistentFlags().StringVar(&rpcServer, "rpc-server", "", "server RPC address (env TANGRAM_RPC; default the --server host, port 7071)")
	client := func(ctx context.Context) (*mq.Client, error) {
		return mq.NewClient(ctx, mq.Config{Servers: strings.Split(g.rpcTarget(rpcServer), ","), Token: g.token})
	}
	with := func(f func(ctx context.Context, c *mq.Client, args []string) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			ctx, cancel := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer cancel()
			c, err := client(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			return f(ctx, c, args)
		}
	}

	topic := &cobra.Command{Use: "topic", Short: "Create, list, describe and delete topics"}
	var queues int
	var order bool
	var onBrokers []string
	create := &cobra.Command{Use: "create TOPIC", Short: "Create a topic (or grow its queues) on every broker, or those named", Args: cobra.ExactArgs(1),
		RunE: with(func(ctx context.Context, c *mq.Client, args []string) error {
			if err := c.CreateTopic(ctx, args[0], queues, order, onBrokers...); err != nil {
				return err
			}
			fmt.Fprintf(g.Out, "topic %s: %d queues per broker\n", args[0], queues)
			return nil
		})}
	create.Flags().IntVar(&queues, "queues", 4, "queues per broker")
	create.Flags().BoolVar(&order, "order", false, "mark the topic ordered (producers send by key)")
	create.Flags().StringSliceVar(&onBrokers, "broker", nil, "brokers to create it on (default all)")
	var all bool
	list := &cobra.Command{Use: "list", Short: "List topics", Args: cobra.NoArgs,
		RunE: with(func(ctx context.Context, c *mq.Client, args []string) error {
			ts, err := c.Topics(ctx, all)
			if err != nil && len(ts) == 0 {
				return err
			}
			return g.Print(ts, func(w *tabwriter.Writer) {
				row(w, "TOPIC", "QUEUES", "MESSAGES", "BROKERS")
				for _, t := range ts {
					var bs []string
					for _, b := range t.Brokers {
						bs = append(bs, b.Broker)
					}
					row(w, t.Name, t.Queues, t.Messages, strings.Join(bs, ","))
				}
			})
		})}
	list.Flags().BoolVar(&all, "all", false, "include system topics (%RETRY%, %DLQ%, %SCHEDULE% …)")
	describe := &cobra.Command{Use: "describe TOPIC", Short: "Show a topic's queues on each broker", Args: cobra.ExactArgs(1),
		RunE: with(func(ctx context.Context, c *mq.Client, args []string) error {
			ts, err := c.Topics(ctx, true)
			if err != nil && len(ts) == 0 {
				return err
			}
			for _, t := range ts {
				if t.Name == args[0] {
					return g.Print(t, func(w *tabwriter.Writer) {
						row(w, "BROKER", "QUEUE", "MIN", "MAX")
						for _, b := range t.Brokers {
							for q := range b.Min {
								row(w, b.Broker, q, b.Min[q], b.Max[q])
							}
						}
					})
				}
			}
			return fmt.Errorf("topic %q does not exist", args[0])
		})}
	del := &cobra.Command{Use: "delete TOPIC", Short: "Delete a topic (its messages go with retention)", Args: cobra.ExactArgs(1),
		RunE: with(func(ctx context.Context, c *mq.Client, args []string) error {
			if err := c.DeleteTopic(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.Out, "topic %s deleted\n", args[0])
			return nil
		})}
	topic.AddCommand(create, list, describe, del)

	var sf struct {
		key, tag, shard string
		delay, count    int
		deliverIn       time.Duration
	}
	send := &cobra.Command{Use: "send TOPIC [BODY]", Short: "Send a message (body from the argument or stdin); --count sends many", Args: cobra.RangeArgs(1, 2),
		RunE: with(func(ctx context.Context, c *mq.Client, args []string) error {
			var body []byte
			if len(args) == 2 {
				body = []byte(args[1])
			} else {
				b, err := io.ReadAll(io.LimitReader(os.Stdin, 64<<20))
				if err != nil {
					return err
				}
				body = b
			}
			p, err := c.NewProducer(mq.ProducerConfig{AutoCreate: true})
			if err != nil {
				return err
			}
			defer p.Close()
			start := time.Now()
			var last *mq.SendResult
			for i := 0; i < max(sf.count, 1); i++ {
				m := &mq.Message{Topic: args[0], Body: body, Tag: sf.tag, ShardingKey: sf.shard, DelayLevel: sf.delay}
				if sf.key != "" {
					m.Keys = []string{sf.key}
				}
				if sf.deliverIn > 0 {
					m.DeliverAt = time.Now().Add(sf.deliverIn)
				}
				if last, err = p.Send(ctx, m); err != nil {
					return fmt.Errorf("message %d: %w", i+1, err)
				}
				if sf.count > 1 && (i+1)%1000 == 0 {
					fmt.Fprintf(os.Stderr, "\rsent %d/%d", i+1, sf.count)
				}
			}
			if sf.count > 1 {
				fmt.Fprintf(os.Stderr, "\rsent %d in %v\n", sf.count, time.Since(start).Round(time.Millisecond))
			}
			return g.Print(last, func(w *tabwriter.Writer) {
				row(w, "ID", "MSG ID", "BROKER", "QUEUE", "OFFSET")
				row(w, last.ID, last.MsgID, last.Broker, last.Queue, last.QueueOffset)
			})
		})}
	send.Flags().StringVar(&sf.key, "key", "", "a key to find the message by")
	send.Flags().StringVar(&sf.tag, "tag", "", "the message's tag")
	send.Flags().StringVar(&sf.shard, "sharding-key", "", "send to the queue of this key (ordered)")
	send.Flags().IntVar(&sf.delay, "delay-level", 0, "delay level (1: 1s, 2: 5s, 3: 10s, 4: 30s, 5: 1m …)")
	send.Flags().DurationVar(&sf.deliverIn, "deliver-in", 0, "deliver after this long (any duration up to 40 days)")
	send.Flags().IntVar(&sf.count, "count", 1, "send the message this many times")

	var cf struct {
		group, tag string
		count      int
		wait       time.Duration
		latest     bool
		orderly    bool
	}
	consume := &cobra.Command{Use: "consume TOPIC", Short: "Consume as a member of --group, printing messages (stops after --count or --wait idle)", Args: cobra.ExactArgs(1),
		RunE: with(func(ctx context.Context, c *mq.Client, args []string) error {
			if cf.group == "" {
				return errors.New("--group is required")
			}
			cs, err := c.NewConsumer(mq.ConsumerConfig{Group: cf.group, FromLatest: cf.latest, Orderly: cf.orderly, Concurrency: 1, Heartbeat: time.Second, LongPoll: time.Second})
			if err != nil {
				return err
			}
			var tags []string
			if cf.tag != "" {
				tags = []string{cf.tag}
			}
			var n atomic.Int64
			var lastAt atomic.Int64
			lastAt.Store(time.Now().UnixNano())
			done := make(chan struct{})
			var closed atomic.Bool
			if err := cs.Subscribe(args[0], tags, func(ctx context.Context, m *mq.Message) error {
				if cf.count > 0 && n.Load() >= int64(cf.count) {
					return mq.ErrNotConsumed // left for the group
				}
				k := n.Add(1)
				lastAt.Store(time.Now().UnixNano())
				if g.Format == "table" {
					fmt.Fprintf(g.Out, "%s\t%s\tq%d@%d\t%s\n", m.StoredAt.Format(time.RFC3339Nano), m.ID, m.Queue, m.QueueOffset, m.Body)
				} else {
					_ = g.Print(map[string]any{"id": m.ID, "msg_id": m.MsgID, "topic": m.Topic, "tag": m.Tag, "keys": m.Keys, "queue": m.Queue,
						"offset": m.QueueOffset, "stored": m.StoredAt, "body": string(m.Body), "props": m.Props}, nil)
				}
				if cf.count > 0 && k >= int64(cf.count) && closed.CompareAndSwap(false, true) {
					close(done)
				}
				return nil
			}); err != nil {
				return err
			}
			if err := cs.Start(ctx); err != nil {
				return err
			}
			defer cs.Close()
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-done:
					return nil
				case <-t.C:
					if cf.wait > 0 && time.Since(time.Unix(0, lastAt.Load())) > cf.wait {
						return nil
					}
				}
			}
		})}
	consume.Flags().StringVar(&cf.group, "group", "", "consumer group")
	consume.Flags().StringVar(&cf.tag, "tag", "", "only messages with this tag")
	consume.Flags().IntVar(&cf.count, "count", 0, "stop after this many messages (0: run until interrupted)")
	consume.Flags().DurationVar(&cf.wait, "wait", 0, "stop after this long without a message (0: never)")
	consume.Flags().BoolVar(&cf.latest, "from-latest", false, "a new group starts at the end instead of the beginning")
	consume.Flags().BoolVar(&cf.orderly, "orderly", false, "consume each queue in order, one message at a time, holding the queue's lock on its broker")

	var lf struct{ id, topic, key string }
	lookup := &cobra.Command{Use: "lookup", Short: "Find messages by broker ID (--id …@broker), or in a --topic by --key", Args: cobra.NoArgs,
		RunE: with(func(ctx context.Context, c *mq.Client, args []string) error {
			ms, err := c.Lookup(ctx, lf.topic, lf.id, lf.key)
			if err != nil {
				return err
			}
			return g.Print(msgsJSON(ms), func(w *tabwriter.Writer) { msgRows(w, ms) })
		})}
	lookup.Flags().StringVar(&lf.id, "id", "", "broker message ID (…@broker)")
	lookup.Flags().StringVar(&lf.topic, "topic", "", "topic to search by key")
	lookup.Flags().StringVar(&lf.key, "key", "", "message key")

	group := &cobra.Command{Use: "group", Short: "Consumer groups: list, lag, reset offsets"}
	glist := &cobra.Command{Use: "list", Short: "List consumer groups with their members and lag", Args: cobra.NoArgs,
		RunE: with(func(ctx context.Context, c *mq.Client, args []string) error {
			gs, err := c.Groups(ctx, "")
			if err != nil && len(gs) == 0 {
				return err
			}
			return g.Print(gs, func(w *tabwriter.Writer) {
				row(w, "GROUP", "MEMBERS", "LAG")
				for _, x := range gs {
					row(w, x.Group, len(x.Clients), x.Lag)
				}
			})
		})}
	lag := &cobra.Command{Use: "lag GROUP", Short: "A group's offsets and lag per queue", Args: cobra.ExactArgs(1),
		RunE: with(func(ctx context.Context, c *mq.Client, args []string) error {
			gs, err := c.Groups(ctx, args[0])
			if err != nil && len(gs) == 0 {
				return err
			}
			if len(gs) == 0 {
				return fmt.Errorf("group %q has no offsets or members", args[0])
			}
			return g.Print(gs[0], func(w *tabwriter.Writer) {
				row(w, "TOPIC", "BROKER", "QUEUE", "OFFSET", "MAX", "LAG")
				for _, q := range gs[0].Queues {
					row(w, q.Topic, q.Broker, q.Queue, q.Offset, q.Max, q.Lag)
				}
				row(w, "total", "", "", "", "", gs[0].Lag)
			})
		})}
	var rf struct{ topic, to string }
	reset := &cobra.Command{Use: "reset-offset GROUP", Short: "Move a group's offsets on --topic to --to start|end|<RFC 3339 time>", Args: cobra.ExactArgs(1),
		RunE: with(func(ctx context.Context, c *mq.Client, args []string) error {
			var to int64
			switch rf.to {
			case "start":
			case "end":
				to = -1
			default:
				t, err := time.Parse(time.RFC3339, rf.to)
				if err != nil {
					return fmt.Errorf("--to %q: want start, end or an RFC 3339 time", rf.to)
				}
				to = t.UnixMilli()
			}
			if rf.topic == "" {
				return errors.New("--topic is required")
			}
			if err := c.ResetOffset(ctx, args[0], rf.topic, to); err != nil {
				return err
			}
			fmt.Fprintf(g.Out, "group %s on %s reset to %s; members pick it up at their next heartbeat\n", args[0], rf.topic, rf.to)
			return nil
		})}
	reset.Flags().StringVar(&rf.topic, "topic", "", "topic")
	reset.Flags().StringVar(&rf.to, "to", "start", "start, end, or an RFC 3339 time")
	group.AddCommand(glist, lag, reset)

	dlq := &cobra.Command{Use: "dlq", Short: "A group's dead letters: list and resend"}
	var from int64
	var maxN int
	var idsOnly bool
	var dlqWait time.Duration
	dlist := &cobra.Command{Use: "list GROUP", Short: "List a group's dead letters", Args: cobra.ExactArgs(1),
		RunE: with(func(ctx context.Context, c *mq.Client, args []string) error {
			ms, err := c.DeadLetters(ctx, args[0], from, maxN)
			for deadline := time.Now().Add(dlqWait); err == nil && len(ms) == 0 && time.Now().Before(deadline); {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(200 * time.Millisecond):
				}
				ms, err = c.DeadLetters(ctx, args[0], from, maxN)
			}
			if err != nil {
				return err
			}
			if idsOnly {
				for _, m := range ms {
					if m.ResentAt().IsZero() { // not those resent already
						fmt.Fprintln(g.Out, m.ID)
					}
				}
				return nil
			}
			return g.Print(msgsJSON(ms), func(w *tabwriter.Writer) {
				msgRows(w, ms)
				for _, m := range ms {
					if at := m.ResentAt(); !at.IsZero() {
						row(w, "", "", "", "", "", "", m.ID+" resent at "+at.UTC().Format(time.RFC3339))
					}
				}
			})
		})}
	dlist.Flags().DurationVar(&dlqWait, "wait", 0, "when there are none, keep looking this long for a first one")
	dlist.Flags().BoolVar(&idsOnly, "ids", false, "print only the IDs of those not resent yet, one per line (for dlq resend)")
	dlist.Flags().Int64Var(&from, "from", 0, "queue offset to list from")
	dlist.Flags().IntVar(&maxN, "max", 100, "messages to list (at most 1024)")
	var again bool
	resend := &cobra.Command{Use: "resend GROUP ID…", Short: "Send dead letters back to the group (retry count reset; one already resent needs --again)", Args: cobra.MinimumNArgs(2),
		RunE: with(func(ctx context.Context, c *mq.Client, args []string) error {
			for _, id := range args[1:] {
				send := c.Resend
				if again {
					send = c.ResendAgain
				}
				if err := send(ctx, args[0], id); err != nil {
					return fmt.Errorf("%s: %w", id, err)
				}
				fmt.Fprintf(g.Out, "resent %s\n", id)
			}
			return nil
		})}
	resend.Flags().BoolVar(&again, "again", false, "resend dead letters that were resent already (they are delivered again)")
	dlq.AddCommand(dlist, resend)

	brokers := &cobra.Command{Use: "brokers", Short: "List registered brokers", Args: cobra.NoArgs,
		RunE: with(func(ctx context.Context, c *mq.Client, args []string) error {
			bs, err := c.Brokers(ctx)
			if err != nil {
				return err
			}
			return g.Print(bs, func(w *tabwriter.Writer) {
				row(w, "NAME", "ROLE", "ADDR", "TOPICS", "SEEN")
				for _, b := range bs {
					row(w, b.Name, b.Role, b.Addr, len(b.Topics), time.UnixMilli(b.Seen).Format(time.RFC3339))
				}
			})
		})}
	cmd.AddCommand(topic, send, consume, lookup, group, dlq, brokers)
	return cmd
}

func msgsJSON(ms []*mq.Message) []map[string]any {
	out := make([]map[string]any, 0, len(ms))
	for _, m := range ms {
		out = append(out, map[string]any{"id": m.ID, "msg_id": m.MsgID, "topic": m.Topic, "tag": m.Tag, "keys": m.Keys, "broker": m.Broker,
			"queue": m.Queue, "offset": m.QueueOffset, "stored": m.StoredAt, "reconsumed": m.Reconsumed, "body": string(m.Body), "props": m.Props})
	}
	return out
}

func msgRows(w *tabwriter.Writer, ms []*mq.Message) {
	row(w, "ID", "TOPIC", "TAG", "KEYS", "STORED", "RETRIES", "BODY")
	for _, m := range ms {
		body := string(m.Body)
		if len(body) > 60 {
			body = body[:60] + "…"
		}
		row(w, m.ID, m.Topic, m.Tag, strings.Join(m.Keys, " "), m.StoredAt.Format(time.RFC3339), strconv.Itoa(m.Reconsumed), body)
	}
}
