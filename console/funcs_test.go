package console

import (
	"testing"

	"github.com/tangram-dev/tangram/mq/wire"
)

// The MQ page's topic counts leave the system topics out.
func TestUserTopics(t *testing.T) {
	count := funcs["userTopics"].(func(any) int)
	if n := count([]wire.TopicConfig{{Name: "orders"}, {Name: "%RETRY%billing"}, {Name: "%DLQ%billing"}, {Name: "%SCHEDULE%"}, {Name: "pay"}}); n != 2 {
		t.Fatalf("%d user topics, want 2", n)
	}
	if n := count([]string{"%TIMER%", "a"}); n != 1 {
		t.Fatalf("%d, want 1", n)
	}
}

// The audit page shows what changed between before and after.
func TestJSONDiff(t *testing.T) {
	d := jsonDiff(`{"a":1,"b":"x","c":true}`, `{"a":2,"b":"x","d":null}`)
	want := []fieldChange{{"a", "1", "2"}, {"c", "true", ""}, {"d", "", "null"}}
	if len(d) != len(want) {
		t.Fatalf("%+v", d)
	}
	for i := range want {
		if d[i] != want[i] {
			t.Fatalf("%+v, want %+v", d, want)
		}
	}
	if jsonDiff("plain", `{"a":1}`) != nil || jsonDiff("", "") != nil {
		t.Fatal("non-objects are shown raw")
	}
}
