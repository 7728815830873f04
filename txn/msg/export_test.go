package msg

import (
	"context"

	"github.com/tangram-dev/tangram/mq"
)

// SetAfterLocal makes s run fn after each local transaction commits and
// before the broker hears of it; fn's error leaves the outcome to the
// check-back, as a sender that died there would.
func SetAfterLocal(s *Sender, fn func(id string) error) { s.afterLocal = fn }

// Check asks s what the broker's check-back would hear about m.
func Check(s *Sender, ctx context.Context, m *mq.Message) mq.TxState { return s.check(ctx, m) }
