package console

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/mq"
	"github.com/tangram-dev/tangram/mq/wire"
)

func (c *Console) registerMQ(mux *http.ServeMux) {
	if c.cfg.MQ == nil {
		return
	}
	mux.Handle("GET /mq", c.page(c.mqPage))
	mux.Handle("GET /mq/topics/{topic}", c.page(c.mqTopicPage))
	mux.Handle("GET /mq/groups/{group}", c.page(c.mqGroupPage))
	mux.Handle("POST /mq/groups/{group}/resend", c.page(c.mqResend))
	mux.Handle("POST /mq/topics/{topic}/send", c.page(c.mqSend))
}

func (c *Console) mqClient(ctx context.Context) (*mq.Client, error) {
	cl, err := c.cfg.MQ(ctx)
	if err != nil {
		return nil, api.Errorf(http.StatusServiceUnavailable, "unavailable", "message queue unavailable: %v", err)
	}
	return cl, nil
}

// mqPage: brokers, topics with their size, groups with their lag.
func (c *Console) mqPage(w http.ResponseWriter, r *http.Request) error {
	if err := auth.Check(r.Context(), auth.PermRead, "", "", ""); err != nil {
		return err
	}
	cl, err := c.mqClient(r.Context())
	if err != nil {
		return err
	}
	p := auth.FromContext(r.Context())
	data := map[string]any{}
	var errs []string
	if bs, err := cl.Brokers(r.Context()); err != nil {
		errs = append(errs, err.Error())
	} else {
		data["Brokers"] = bs
	}
	ts, err := cl.Topics(r.Context(), false)
	if err != nil {
		errs = append(errs, err.Error())
	}
	var topics []mq.TopicInfo
	for _, t := range ts {
		if p.Can(auth.PermRead, "", t.Name, "") {
			topics = append(topics, t)
		}
	}
	data["Topics"] = topics
	gs, err := cl.Groups(r.Context(), "")
	if err != nil {
		errs = append(errs, err.Error())
	}
	var groups []mq.GroupInfo
	for _, g := range gs {
		if p.Can(auth.PermRead, "", g.Group, "") {
			groups = append(groups, g)
		}
	}
	data["Groups"] = groups
	// Producer groups connected for transaction check-backs.
	if ps, err := cl.Producers(r.Context(), ""); err == nil {
		var visible []wire.ProducerConn
		for _, pc := range ps {
			if p.Can(auth.PermRead, "", pc.Group, "") {
				visible = append(visible, pc)
			}
		}
		data["Producers"] = visible
	}
	data["Errors"] = errs
	var cs chartSet
	cs.add(c.metricChart("Messages per minute", "",
		metricLine{class: "line-calls", name: "stored", metric: "tangram_mq_messages_in_total"},
		metricLine{class: "line-p95", name: "pulled", metric: "tangram_mq_messages_out_total"}))
	cs.add(c.metricChart("Dead letters and retries per minute", "",
		metricLine{class: "line-p95", name: "retried", metric: "tangram_mq_retried_total"},
		metricLine{class: "line-errors", name: "dead", metric: "tangram_mq_dead_letters_total"}))
	data["Charts"] = cs
	c.render(w, r, "mq", "Message queue", data)
	return nil
}

// mqTopicPage: a topic's queues on each broker, and look-up by key or ID.
func (c *Console) mqTopicPage(w http.ResponseWriter, r *http.Request) error {
	topic := r.PathValue("topic")
	if err := auth.Check(r.Context(), auth.PermRead, "", topic, ""); err != nil {
		return err
	}
	cl, err := c.mqClient(r.Context())
	if err != nil {
		return err
	}
	ts, err := cl.Topics(r.Context(), true)
	if err != nil && len(ts) == 0 {
		return api.Errorf(http.StatusBadGateway, "broker_error", "%v", err)
	}
	var info *mq.TopicInfo
	for i := range ts {
		if ts[i].Name == topic {
			info = &ts[i]
		}
	}
	if info == nil {
		return api.Errorf(http.StatusNotFound, "not_found", "topic %q does not exist", topic)
	}
	data := map[string]any{"Topic": info, "Key": r.FormValue("key"), "ID": r.FormValue("id")}
	if key, id := r.FormValue("key"), r.FormValue("id"); key != "" || id != "" {
		lookTopic := topic
		if id != "" {
			lookTopic = ""
		}
		ms, err := cl.Lookup(r.Context(), lookTopic, id, key)
		if err != nil {
			data["LookupError"] = err.Error()
		}
		data["Found"] = ms
		data["Searched"] = true
	}
	// Browse a queue from an offset.
	if b := r.FormValue("broker"); b != "" {
		q, _ := strconv.ParseUint(r.FormValue("queue"), 10, 32)
		from, _ := strconv.ParseInt(r.FormValue("offset"), 10, 64)
		var ms []*mq.Message
		var next int64
		var err error
		if at := r.FormValue("at"); at != "" {
			// From a time (UTC): the first message stored then or after.
			t, perr := time.Parse("2006-01-02T15:04", at)
			if perr != nil {
				t, perr = time.Parse("2006-01-02T15:04:05", at)
			}
			if perr != nil {
				return api.BadRequest("at %q: want a date and time (UTC)", at)
			}
			ms, next, err = cl.BrowseAt(r.Context(), topic, b, uint32(q), t, 50)
			if len(ms) > 0 {
				from = ms[0].QueueOffset
			}
		} else {
			ms, next, err = cl.Browse(r.Context(), topic, b, uint32(q), from, 50)
		}
		if err != nil {
			data["BrowseError"] = err.Error()
		}
		data["Browsed"], data["Browse"] = ms, map[string]any{"Broker": b, "Queue": q, "Offset": from, "Next": next}
	}
	data["CanSend"] = auth.FromContext(r.Context()).Can(auth.PermEdit, "", topic, "")
	var cs chartSet
	cs.add(c.metricChart("Messages stored per minute", "",
		metricLine{class: "line-calls", name: "stored", metric: "tangram_mq_topic_messages_total", match: map[string]string{"topic": topic}}))
	data["Charts"] = cs
	c.render(w, r, "mqtopic", topic, data)
	return nil
}

// mqSend sends a test message to a topic (RocketMQ dashboard's "send
// message"): a body, and optionally a key and a tag.
func (c *Console) mqSend(w http.ResponseWriter, r *http.Request) error {
	topic := r.PathValue("topic")
	if err := auth.Check(r.Context(), auth.PermEdit, "", topic, ""); err != nil {
		return err
	}
	cl, err := c.mqClient(r.Context())
	if err != nil {
		return err
	}
	p, err := cl.NewProducer(mq.ProducerConfig{})
	if err != nil {
		return err
	}
	defer p.Close()
	m := &mq.Message{Topic: topic, Body: []byte(r.FormValue("body")), Tag: strings.TrimSpace(r.FormValue("tag"))}
	if k := strings.TrimSpace(r.FormValue("key")); k != "" {
		m.Keys = []string{k}
	}
	res, err := p.Send(r.Context(), m)
	if err != nil {
		c.back(w, r, "", "send: "+err.Error())
		return nil
	}
	c.log.Info("console: test message sent", "topic", topic, "id", res.ID, "by", auth.FromContext(r.Context()).Name)
	http.Redirect(w, r, "/mq/topics/"+url.PathEscape(topic)+"?msg="+url.QueryEscape(fmt.Sprintf("sent %s to queue %d", res.ID, res.Queue)), http.StatusSeeOther)
	return nil
}

// mqGroupPage: a group's members, offsets and lag, and its dead letters.
func (c *Console) mqGroupPage(w http.ResponseWriter, r *http.Request) error {
	group := r.PathValue("group")
	if err := auth.Check(r.Context(), auth.PermRead, "", group, ""); err != nil {
		return err
	}
	cl, err := c.mqClient(r.Context())
	if err != nil {
		return err
	}
	gs, err := cl.Groups(r.Context(), group)
	if err != nil && len(gs) == 0 {
		return api.Errorf(http.StatusBadGateway, "broker_error", "%v", err)
	}
	data := map[string]any{"Group": group}
	if len(gs) == 1 {
		data["Info"] = gs[0]
	}
	dead, err := cl.DeadLetters(r.Context(), group, 0, 100)
	if err != nil {
		data["DLQError"] = err.Error()
	}
	data["Dead"] = dead
	data["CanResend"] = auth.FromContext(r.Context()).Can(auth.PermEdit, "", group, "")
	var cs chartSet
	by := map[string]string{"group": group}
	cs.add(c.metricChart("Messages consumed per minute", "",
		metricLine{class: "line-calls", name: "consumed", metric: "tangram_mq_group_consumed_total", match: by}))
	cs.add(c.metricChart("Lag (messages not consumed)", "",
		metricLine{class: "line-p95", name: "lag", metric: "tangram_mq_group_lag", match: by}))
	data["Charts"] = cs
	c.render(w, r, "mqgroup", group, data)
	return nil
}

// mqResend sends a dead letter back to its group.
func (c *Console) mqResend(w http.ResponseWriter, r *http.Request) error {
	group := r.PathValue("group")
	if err := auth.Check(r.Context(), auth.PermEdit, "", group, ""); err != nil {
		return err
	}
	cl, err := c.mqClient(r.Context())
	if err != nil {
		return err
	}
	id := r.FormValue("id")
	if err := cl.Resend(r.Context(), group, id); err != nil {
		c.back(w, r, "", "resend "+id+": "+err.Error())
		return nil
	}
	c.log.Info("console: dead letter resent", "group", group, "id", id, "by", auth.FromContext(r.Context()).Name)
	http.Redirect(w, r, "/mq/groups/"+url.PathEscape(group)+"?msg="+url.QueryEscape("resent "+id), http.StatusSeeOther)
	return nil
}
