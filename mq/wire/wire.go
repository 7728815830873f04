// Package wire is the message queue's protocol: the requests and replies
// that producers, consumers, brokers and the name service exchange over
// Tangram RPC (msgpack bodies), the reserved property names and the system
// topics. Check validates what arrives from the network before a broker
// acts on it.
package wire

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/tangram-dev/tangram/internal/errcode"
)

// RPC methods.
const (
	MethodSend        = "tangram.MQ/Send"
	MethodPull        = "tangram.MQ/Pull"
	MethodCommit      = "tangram.MQ/Commit"
	MethodOffsets     = "tangram.MQ/Offsets"
	MethodHeartbeat   = "tangram.MQ/Heartbeat"
	MethodUnregister  = "tangram.MQ/Unregister"
	MethodLock        = "tangram.MQ/Lock"
	MethodUnlock      = "tangram.MQ/Unlock"
	MethodRetry       = "tangram.MQ/Retry"
	MethodEndTx       = "tangram.MQ/EndTransaction"
	MethodTxChecks    = "tangram.MQ/TxChecks"
	MethodCreateTopic = "tangram.MQ/CreateTopic"
	MethodDeleteTopic = "tangram.MQ/DeleteTopic"
	MethodTopics      = "tangram.MQ/Topics"
	MethodLookup      = "tangram.MQ/Lookup"
	MethodGroups      = "tangram.MQ/Groups"
	MethodResetOffset = "tangram.MQ/ResetOffset"

	MethodReplicate = "tangram.MQ/Replicate"

	MethodRegisterBroker = "tangram.MQNames/Register"
	MethodRoute          = "tangram.MQNames/Route"
	MethodBrokers        = "tangram.MQNames/Brokers"
)

// Reserved message properties.
const (
	PropKeys      = "KEYS"       // space-separated keys, indexed for look-up
	PropTags      = "TAGS"       // one tag, filtered on the broker
	PropID        = "ID"         // the producer's unique message ID
	PropDelay     = "DELAY"      // delay level, 1…len(levels)
	PropDeliverAt = "DELIVER_AT" // unix ms: deliver at this time
	PropRealTopic = "REAL_TOPIC" // a delayed, retried or half message's destination
	PropRealQueue = "REAL_QID"
	PropReconsume = "RECONSUME_TIMES"
	PropOriginID  = "ORIGIN_MSG_ID" // a retried message's first broker ID
	PropTx        = "TRAN_MSG"      // "true": a transactional half message
	PropPGroup    = "PGROUP"        // the producer group that checks a half message
	PropTxChecks  = "TX_CHECKS"     // how often a half message was checked
	PropXID       = "tangram-xid"
	PropTrace     = "traceparent"
)

// System topics.
const (
	TopicSchedule = "%SCHEDULE%" // delayed by level: queue = level-1
	TopicTimer    = "%TIMER%"    // delayed to a time
	TopicHalf     = "%HALF%"     // transactional half messages
	TopicOp       = "%OP%"       // their commit/rollback records
	RetryPrefix   = "%RETRY%"
	DLQPrefix     = "%DLQ%"
)

// RetryTopic is a group's retry topic; DLQTopic its dead-letter topic.
func RetryTopic(group string) string { return RetryPrefix + group }

// DLQTopic is a group's dead-letter topic.
func DLQTopic(group string) string { return DLQPrefix + group }

// Limits.
const (
	MaxBatch        = 4096     // messages in one Send
	MaxPull         = 1024     // messages in one Pull
	MaxWaitMs       = 60_000   // longest long poll
	MaxQueues       = 1024     // queues per topic
	MaxName         = 127      // topic, group and client names
	MaxProps        = 64       // properties per message
	DefaultMaxBody  = 4 << 20  // message body
	MaxBodyBytes    = 64 << 20 // the largest body a broker may allow
	DefaultQueues   = 4
	DefaultMaxRetry = 16
)

// ErrInvalid marks a request that fails validation.
var ErrInvalid = errcode.New(errcode.BadRequest, "mq/wire: invalid")

// Msg is a message a producer sends.
type Msg struct {
	Props  map[string]string `msgpack:"p,omitempty"`
	Body   []byte            `msgpack:"b"`
	BornAt int64             `msgpack:"t"`
}

// SendRequest appends messages to one queue of a topic, in order.
type SendRequest struct {
	Topic string `msgpack:"topic"`
	Queue int32  `msgpack:"queue"` // -1: the broker picks
	Msgs  []Msg  `msgpack:"msgs"`
	// AutoCreate creates an unknown topic (if the broker allows it).
	AutoCreate bool `msgpack:"create,omitempty"`
	Queues     int  `msgpack:"queues,omitempty"` // for AutoCreate
}

// SendReply gives the stored messages' IDs (broker IDs: look-up keys) and
// the queue offset of the first; the rest follow it.
type SendReply struct {
	Queue       uint32   `msgpack:"queue"`
	QueueOffset int64    `msgpack:"qoff"`
	IDs         []string `msgpack:"ids"`
}

// PullRequest reads a queue from an offset, waiting up to WaitMs for
// messages when there are none.
type PullRequest struct {
	Group  string   `msgpack:"group"`
	Topic  string   `msgpack:"topic"`
	Queue  uint32   `msgpack:"queue"`
	Offset int64    `msgpack:"offset"`
	Max    int      `msgpack:"max"`
	WaitMs int      `msgpack:"wait"`
	Tags   []string `msgpack:"tags,omitempty"`
	// At, when set (unix ms), starts at the first message stored at or
	// after that time instead of at Offset (browsing by time).
	At int64 `msgpack:"at,omitempty"`
}

// StoredMsg is a message as consumers see it.
type StoredMsg struct {
	ID          string            `msgpack:"id"` // broker ID: name, commitlog offset and size
	Topic       string            `msgpack:"topic"`
	Queue       uint32            `msgpack:"queue"`
	QueueOffset int64             `msgpack:"qoff"`
	Props       map[string]string `msgpack:"p,omitempty"`
	Body        []byte            `msgpack:"b"`
	BornAt      int64             `msgpack:"born"`
	StoredAt    int64             `msgpack:"stored"`
	// Offset and Size locate it in the broker's commitlog (the ID says the
	// same; set by the broker, so encoding need not parse the ID).
	Offset int64 `msgpack:"-" json:"-"`
	Size   int32 `msgpack:"-" json:"-"`
}

// PullReply carries messages and the next offset to pull from; Min and
// Max are the queue's bounds (an offset outside them is corrected to the
// nearest and Moved set).
type PullReply struct {
	Msgs  []StoredMsg `msgpack:"msgs"`
	Next  int64       `msgpack:"next"`
	Min   int64       `msgpack:"min"`
	Max   int64       `msgpack:"max"`
	Moved bool        `msgpack:"moved,omitempty"`
}

// QueueOffset is a group's position in one queue.
type QueueOffset struct {
	Topic  string `msgpack:"topic"`
	Queue  uint32 `msgpack:"queue"`
	Offset int64  `msgpack:"offset"`
}

// CommitRequest records a group's consumed offsets.
type CommitRequest struct {
	Group string `msgpack:"group"`
	// Epoch is the group's reset epoch the consumer read its offsets in;
	// commits from before an offset reset are ignored.
	Epoch   int64         `msgpack:"epoch"`
	Offsets []QueueOffset `msgpack:"offsets"`
}

// OffsetsRequest asks a group's committed offsets of a topic's queues.
type OffsetsRequest struct {
	Group string `msgpack:"group"`
	Topic string `msgpack:"topic"`
}

// OffsetsReply: committed offsets (-1: none), and each queue's bounds.
type OffsetsReply struct {
	Epoch   int64         `msgpack:"epoch"`
	Offsets []QueueOffset `msgpack:"offsets"`
	Min     []int64       `msgpack:"min"`
	Max     []int64       `msgpack:"max"`
}

// HeartbeatRequest announces a consumer in a group.
type HeartbeatRequest struct {
	Group  string   `msgpack:"group"`
	Client string   `msgpack:"client"`
	Topics []string `msgpack:"topics"`
}

// HeartbeatReply lists the group's live consumers, sorted.
type HeartbeatReply struct {
	Clients []string `msgpack:"clients"`
	// Epoch changes when an admin resets the group's offsets: consumers
	// then drop what they fetched and read the committed offsets again.
	Epoch int64 `msgpack:"epoch"`
}

// LockRequest locks queues of a topic for one consumer of a group
// (ordered consumption); the reply lists those it holds now.
type LockRequest struct {
	Group  string   `msgpack:"group"`
	Client string   `msgpack:"client"`
	Topic  string   `msgpack:"topic"`
	Queues []uint32 `msgpack:"queues"`
}

// LockReply lists the locked queues.
type LockReply struct {
	Queues []uint32 `msgpack:"queues"`
}

// RetryRequest sends a message that failed consumption back: to the
// group's retry topic after a delay, or its dead-letter topic after
// MaxRetry attempts.
type RetryRequest struct {
	Group    string `msgpack:"group"`
	ID       string `msgpack:"id"`
	MaxRetry int    `msgpack:"max"`
	// DelayLevel overrides the delay (0: 3 + times reconsumed).
	DelayLevel int `msgpack:"level,omitempty"`
	// DLQ sends it to the dead-letter topic now (ordered consumption retries
	// in the consumer, then gives up).
	DLQ bool `msgpack:"dlq,omitempty"`
	// Resend sends a dead letter (ID in the group's DLQ topic) back to the
	// group's retry topic now, its retry count reset. A dead letter already
	// resent is refused (AlreadyExists) unless Force is set.
	Resend bool `msgpack:"resend,omitempty"`
	Force  bool `msgpack:"force,omitempty"`
}

// PropResentAt marks, on a dead letter a listing returns, when it was
// resent (unix ms).
const PropResentAt = "RESENT_AT"

// RetryReply says where the message went.
type RetryReply struct {
	Topic string `msgpack:"topic"`
}

// EndTxRequest commits or rolls back a half message.
type EndTxRequest struct {
	ID     string `msgpack:"id"` // the half message's broker ID
	Commit bool   `msgpack:"commit"`
	// FromCheck marks an answer to a check-back.
	FromCheck bool `msgpack:"check,omitempty"`
}

// TxChecksRequest opens a producer group's check-back stream.
type TxChecksRequest struct {
	Group string `msgpack:"group"`
}

// TxCheck asks a producer about a half message.
type TxCheck struct {
	Msg StoredMsg `msgpack:"msg"`
}

// TopicConfig describes a topic on a broker.
type TopicConfig struct {
	Name   string `msgpack:"name" json:"name"`
	Queues int    `msgpack:"queues" json:"queues"`
	// Order: producers pick queues by key (documentation for clients).
	Order   bool  `msgpack:"order,omitempty" json:"order,omitempty"`
	Created int64 `msgpack:"created" json:"created"`
}

// TopicStats is a topic's state on a broker.
type TopicStats struct {
	TopicConfig `msgpack:",inline"`
	Min         []int64 `msgpack:"min" json:"min"`
	Max         []int64 `msgpack:"max" json:"max"`
}

// TopicsReply lists a broker's topics.
type TopicsReply struct {
	Topics []TopicStats `msgpack:"topics"`
}

// NameRequest names a topic or group.
type NameRequest struct {
	Name string `msgpack:"name"`
}

// LookupRequest finds messages by broker ID, or in a topic by key.
type LookupRequest struct {
	Topic string `msgpack:"topic,omitempty"`
	ID    string `msgpack:"id,omitempty"`
	Key   string `msgpack:"key,omitempty"`
	Max   int    `msgpack:"max,omitempty"`
}

// LookupReply carries the messages found.
type LookupReply struct {
	Msgs []StoredMsg `msgpack:"msgs"`
}

// GroupStats is a consumer group's state on a broker.
type GroupStats struct {
	Group   string   `msgpack:"group" json:"group"`
	Clients []string `msgpack:"clients" json:"clients"`
	// Conns describes each live member's connection (as RocketMQ's
	// dashboard lists a group's consumer connections).
	Conns   []ClientConn  `msgpack:"conns,omitempty" json:"conns,omitempty"`
	Offsets []QueueOffset `msgpack:"offsets" json:"offsets"`
	Max     []int64       `msgpack:"max" json:"max"` // per Offsets entry
	Lag     int64         `msgpack:"lag" json:"lag"`
}

// ClientConn is a consumer as a broker sees it: its ID, the address its
// heartbeats come from, when the last came, and what it subscribes to.
type ClientConn struct {
	Client   string   `msgpack:"client" json:"client"`
	Addr     string   `msgpack:"addr" json:"addr"`
	LastBeat int64    `msgpack:"beat" json:"last_beat"` // unix ms
	Topics   []string `msgpack:"topics,omitempty" json:"topics,omitempty"`
	Broker   string   `msgpack:"broker,omitempty" json:"broker,omitempty"`
}

// GroupsReply lists a broker's consumer groups.
type GroupsReply struct {
	Groups []GroupStats `msgpack:"groups"`
	// Producers are the producers connected for transaction check-backs,
	// by producer group (the producers a broker knows by group).
	Producers []ProducerConn `msgpack:"producers,omitempty"`
}

// ProducerConn is a producer of a group listening for transaction
// check-backs on a broker.
type ProducerConn struct {
	Group  string `msgpack:"group" json:"group"`
	Addr   string `msgpack:"addr" json:"addr"`
	Since  int64  `msgpack:"since" json:"since"` // unix ms
	Broker string `msgpack:"broker,omitempty" json:"broker,omitempty"`
}

// ResetOffsetRequest moves a group's offsets on a topic to a time (unix ms;
// 0: the start, -1: the end).
type ResetOffsetRequest struct {
	Group string `msgpack:"group"`
	Topic string `msgpack:"topic"`
	To    int64  `msgpack:"to"`
}

// BrokerInfo is what a broker registers with the name service.
type BrokerInfo struct {
	Name   string        `msgpack:"name" json:"name"`
	Addr   string        `msgpack:"addr" json:"addr"`
	Role   string        `msgpack:"role" json:"role"` // master or slave
	Master string        `msgpack:"master,omitempty" json:"master,omitempty"`
	Topics []TopicConfig `msgpack:"topics" json:"topics"`
	// AutoCreate: the broker creates unknown topics on first send.
	AutoCreate bool  `msgpack:"auto,omitempty" json:"auto_create"`
	Seen       int64 `msgpack:"seen,omitempty" json:"seen"` // unix ms, set by the name service
}

// RouteRequest asks where a topic lives.
type RouteRequest struct {
	Topic string `msgpack:"topic"`
}

// BrokerQueues is one broker's part of a topic.
type BrokerQueues struct {
	Broker string `msgpack:"broker" json:"broker"`
	Addr   string `msgpack:"addr" json:"addr"`
	Role   string `msgpack:"role" json:"role"`
	Queues int    `msgpack:"queues" json:"queues"`
}

// RouteReply lists the brokers holding a topic; when none does, Brokers
// lists the brokers that would create it (AutoCreate set).
type RouteReply struct {
	Topic   string         `msgpack:"topic"`
	Queues  []BrokerQueues `msgpack:"queues"`
	Creator []BrokerQueues `msgpack:"creator,omitempty"`
}

// BrokersReply lists registered brokers.
type BrokersReply struct {
	Brokers []BrokerInfo `msgpack:"brokers"`
}

// ValidName reports whether s is a usable topic or group name: 1–127
// letters, digits, '_', '-' or '.'; '%' only in system names.
func ValidName(s string, system bool) error {
	if len(s) == 0 || len(s) > MaxName || s == "." || s == ".." {
		return fmt.Errorf("%w name %q: 1–%d characters", ErrInvalid, s, MaxName)
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || system && c == '%') {
			return fmt.Errorf("%w name %q: letters, digits, '_', '-' or '.'", ErrInvalid, s)
		}
	}
	return nil
}

// ValidTopic checks a topic a client may use: a user topic, or a retry or
// dead-letter topic of a valid group.
func ValidTopic(t string) error {
	for _, p := range []string{RetryPrefix, DLQPrefix} {
		if g, ok := strings.CutPrefix(t, p); ok {
			return ValidName(g, false)
		}
	}
	return ValidName(t, false)
}

// Check validates a SendRequest against the broker's body limit.
func (r *SendRequest) Check(maxBody int) error {
	if err := ValidTopic(r.Topic); err != nil {
		return err
	}
	if len(r.Msgs) == 0 || len(r.Msgs) > MaxBatch {
		return fmt.Errorf("%w batch of %d messages (want 1–%d)", ErrInvalid, len(r.Msgs), MaxBatch)
	}
	if r.Queue < -1 || r.Queue >= MaxQueues {
		return fmt.Errorf("%w queue %d", ErrInvalid, r.Queue)
	}
	if r.Queues < 0 || r.Queues > MaxQueues {
		return fmt.Errorf("%w queue count %d (want 1–%d)", ErrInvalid, r.Queues, MaxQueues)
	}
	for i := range r.Msgs {
		m := &r.Msgs[i]
		if len(m.Body) > maxBody {
			return fmt.Errorf("%w message %d: body of %d bytes exceeds the limit of %d", ErrInvalid, i, len(m.Body), maxBody)
		}
		if len(m.Props) > MaxProps {
			return fmt.Errorf("%w message %d: %d properties (at most %d)", ErrInvalid, i, len(m.Props), MaxProps)
		}
		n := 0
		for k, v := range m.Props {
			if k == "" || len(k) > 255 || len(v) > 16<<10 {
				return fmt.Errorf("%w message %d: property %.40q: key 1–255 bytes, value at most 16 KiB", ErrInvalid, i, k)
			}
			n += len(k) + len(v) + 4
		}
		if n > 32<<10 {
			return fmt.Errorf("%w message %d: properties of %d bytes (at most 32 KiB)", ErrInvalid, i, n)
		}
	}
	return nil
}

// Check validates a PullRequest.
func (r *PullRequest) Check() error {
	if err := ValidName(r.Group, false); err != nil {
		return fmt.Errorf("group: %w", err)
	}
	if err := ValidTopic(r.Topic); err != nil {
		return err
	}
	if r.Queue >= MaxQueues || r.Offset < 0 || r.At < 0 || r.Max < 1 || r.Max > MaxPull || r.WaitMs < 0 || r.WaitMs > MaxWaitMs || len(r.Tags) > 64 {
		return fmt.Errorf("%w pull: queue < %d, offset ≥ 0, max 1–%d, wait 0–%d ms, at most 64 tags", ErrInvalid, MaxQueues, MaxPull, MaxWaitMs)
	}
	return nil
}

// FormatID makes a broker message ID: the commitlog offset and size (which
// locate the message) and the broker's name.
func FormatID(broker string, offset int64, size int32) string {
	const hexDigits = "0123456789ABCDEF"
	b := make([]byte, 25+len(broker))
	for i := 15; i >= 0; i-- {
		b[i] = hexDigits[offset&0xf]
		offset >>= 4
	}
	sz := uint32(size)
	for i := 23; i >= 16; i-- {
		b[i] = hexDigits[sz&0xf]
		sz >>= 4
	}
	b[24] = '@'
	copy(b[25:], broker)
	return string(b)
}

// ParseID splits a broker message ID.
func ParseID(id string) (broker string, offset int64, size int32, err error) {
	hexPart, broker, ok := strings.Cut(id, "@")
	if !ok || len(hexPart) != 24 || broker == "" {
		return "", 0, 0, fmt.Errorf("%w message ID %.80q: want 24 hex digits, '@' and a broker name", ErrInvalid, id)
	}
	off, err1 := strconv.ParseUint(hexPart[:16], 16, 63)
	sz, err2 := strconv.ParseUint(hexPart[16:], 16, 32)
	if err1 != nil || err2 != nil || sz == 0 || sz > 1<<30 {
		return "", 0, 0, fmt.Errorf("%w message ID %.80q: bad offset or size", ErrInvalid, id)
	}
	return broker, int64(off), int32(sz), nil
}

// GroupOffsets is one group's committed offsets, for replication.
type GroupOffsets struct {
	Group   string        `msgpack:"group"`
	Epoch   int64         `msgpack:"epoch"`
	Offsets []QueueOffset `msgpack:"offsets"`
}

// ReplAck flows from a slave to its master: the first names where the
// slave's commitlog ends (From) and its segment size; later ones confirm
// how far it has stored (Acked) and carry the offsets consumers committed
// on the slave while the master was away.
type ReplAck struct {
	From        int64          `msgpack:"from"`
	SegmentSize int            `msgpack:"seg,omitempty"`
	Acked       int64          `msgpack:"acked"`
	Offsets     []GroupOffsets `msgpack:"offsets,omitempty"`
}

// ReplFrame flows from a master to a slave: commitlog records at Offset,
// and now and then the topic table and the groups' offsets.
type ReplFrame struct {
	Offset  int64          `msgpack:"offset"`
	Data    []byte         `msgpack:"data,omitempty"`
	Topics  []TopicConfig  `msgpack:"topics,omitempty"`
	Offsets []GroupOffsets `msgpack:"offsets,omitempty"`
	Meta    bool           `msgpack:"meta,omitempty"` // Topics and Offsets are set
}
