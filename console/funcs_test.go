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
