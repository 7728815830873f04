package job

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestFireTimes(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		job  Job
		want []time.Time // first fire, then nexts
	}{
		{"cron seconds", Job{Enabled: true, Trigger: Trigger{Kind: TriggerCron, Cron: "*/15 * * * * *"}},
			[]time.Time{now.Add(15 * time.Second), now.Add(30 * time.Second)}},
		{"cron in a zone", Job{Enabled: true, Trigger: Trigger{Kind: TriggerCron, Cron: "0 30 8 * * *", TimeZone: "Asia/Shanghai"}},
			[]time.Time{time.Date(2026, 11, 26, 0, 30, 0, 0, time.UTC), time.Date(2026, 11, 27, 0, 30, 0, 0, time.UTC)}},
		{"rate from now", Job{Enabled: true, Trigger: Trigger{Kind: TriggerRate, Every: Duration(time.Minute)}},
			[]time.Time{now.Add(time.Minute), now.Add(2 * time.Minute)}},
		{"rate from its start", Job{Enabled: true, StartAt: now.Add(1500 * time.Millisecond), Trigger: Trigger{Kind: TriggerRate, Every: Duration(10 * time.Second)}},
			[]time.Time{now.Add(1500 * time.Millisecond), now.Add(11500 * time.Millisecond)}},
		{"cron bounded by end", Job{Enabled: true, EndAt: now.Add(20 * time.Second), Trigger: Trigger{Kind: TriggerCron, Cron: "*/15 * * * * *"}},
			[]time.Time{now.Add(15 * time.Second), {}}},
		{"once", Job{Enabled: true, Trigger: Trigger{Kind: TriggerOnce, At: now.Add(time.Hour)}}, []time.Time{now.Add(time.Hour), {}}},
		{"manual", Job{Enabled: true, Trigger: Trigger{Kind: TriggerManual}}, []time.Time{{}}},
		{"disabled", Job{Trigger: Trigger{Kind: TriggerCron, Cron: "* * * * * *"}}, []time.Time{{}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := c.job.FirstFire(now)
			if !got.Equal(c.want[0]) {
				t.Fatalf("first fire %v, want %v", got, c.want[0])
			}
			for _, w := range c.want[1:] {
				got = c.job.NextFire(got)
				if !got.Equal(w) {
					t.Fatalf("next fire %v, want %v", got, w)
				}
			}
		})
	}
}

func TestNormalizeNamesTheField(t *testing.T) {
	base := func() Job { return Job{Name: "j", App: "a", Handler: "h", Trigger: Trigger{Kind: TriggerManual}} }
	for _, c := range []struct {
		mut  func(*Job)
		want string
	}{
		{func(j *Job) { j.Trigger = Trigger{Kind: TriggerCron, Cron: "* * *"} }, "trigger.cron"},
		{func(j *Job) { j.Trigger = Trigger{Kind: "weekly"} }, "trigger.kind"},
		{func(j *Job) { j.Trigger = Trigger{Kind: TriggerOnce} }, "trigger.at"},
		{func(j *Job) { j.Misfire = "maybe" }, "misfire"},
		{func(j *Job) { j.Block = "queue" }, "block"},
		{func(j *Job) { j.Handler = "glue:perl" }, "handler"},
		{func(j *Job) { j.StartAt, j.EndAt = time.Unix(100, 0), time.Unix(50, 0) }, "end_at"},
		{func(j *Job) { j.Handler = FlowHandler }, "flow"},
	} {
		j := base()
		c.mut(&j)
		err := j.Normalize()
		if !errors.Is(err, ErrInvalid) || !contains(err.Error(), c.want) {
			t.Errorf("want an error naming %s, got %v", c.want, err)
		}
	}
	j := base()
	if err := j.Normalize(); err != nil || j.Route != RouteRoundRobin || j.Block != BlockSerial || j.Misfire != MisfireFireOnce || j.MisfireThreshold.D() != time.Minute {
		t.Fatalf("defaults: %+v %v", j, err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
