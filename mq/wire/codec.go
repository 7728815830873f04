package wire

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// The hot messages (sends and pulls) encode themselves as msgpack arrays
// instead of going through reflection: the same wire codec, several times
// cheaper per message. Decoders bound every count before allocating.

func encodeProps(e *msgpack.Encoder, p map[string]string) error {
	if err := e.EncodeMapLen(len(p)); err != nil {
		return err
	}
	for k, v := range p {
		if err := e.EncodeString(k); err != nil {
			return err
		}
		if err := e.EncodeString(v); err != nil {
			return err
		}
	}
	return nil
}

func decodeProps(d *msgpack.Decoder) (map[string]string, error) {
	n, err := d.DecodeMapLen()
	if err != nil || n <= 0 {
		return nil, err
	}
	if n > MaxProps {
		return nil, fmt.Errorf("%w: %d properties (at most %d)", ErrInvalid, n, MaxProps)
	}
	p := make(map[string]string, n)
	var kb [32]byte
	for range n {
		kl, err := d.DecodeBytesLen()
		if err != nil {
			return nil, err
		}
		var k string
		if kl >= 0 && kl <= len(kb) {
			if err := d.ReadFull(kb[:kl]); err != nil {
				return nil, err
			}
			k = internKey(kb[:kl])
		} else if kl > len(kb) {
			b := make([]byte, kl)
			if err := d.ReadFull(b); err != nil {
				return nil, err
			}
			k = string(b)
		}
		v, err := d.DecodeString()
		if err != nil {
			return nil, err
		}
		p[k] = v
	}
	return p, nil
}

func arrayLen(d *msgpack.Decoder, want int, what string) error {
	n, err := d.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n != want {
		return fmt.Errorf("%w %s: %d fields, want %d", ErrInvalid, what, n, want)
	}
	return nil
}

// EncodeMsgpack implements msgpack.CustomEncoder.
func (r *SendRequest) EncodeMsgpack(e *msgpack.Encoder) error {
	_ = e.EncodeArrayLen(5)
	_ = e.EncodeString(r.Topic)
	_ = e.EncodeInt(int64(r.Queue))
	_ = e.EncodeBool(r.AutoCreate)
	_ = e.EncodeInt(int64(r.Queues))
	if err := e.EncodeArrayLen(len(r.Msgs)); err != nil {
		return err
	}
	for i := range r.Msgs {
		m := &r.Msgs[i]
		_ = e.EncodeArrayLen(3)
		if err := encodeProps(e, m.Props); err != nil {
			return err
		}
		_ = e.EncodeBytes(m.Body)
		if err := e.EncodeInt(m.BornAt); err != nil {
			return err
		}
	}
	return nil
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (r *SendRequest) DecodeMsgpack(d *msgpack.Decoder) (err error) {
	if err := arrayLen(d, 5, "send request"); err != nil {
		return err
	}
	if r.Topic, err = d.DecodeString(); err != nil {
		return err
	}
	if r.Queue, err = d.DecodeInt32(); err != nil {
		return err
	}
	if r.AutoCreate, err = d.DecodeBool(); err != nil {
		return err
	}
	if r.Queues, err = d.DecodeInt(); err != nil {
		return err
	}
	n, err := d.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n > MaxBatch {
		return fmt.Errorf("%w: batch of %d messages (at most %d)", ErrInvalid, n, MaxBatch)
	}
	r.Msgs = make([]Msg, max(n, 0))
	for i := range r.Msgs {
		m := &r.Msgs[i]
		if err := arrayLen(d, 3, "message"); err != nil {
			return err
		}
		if m.Props, err = decodeProps(d); err != nil {
			return err
		}
		if m.Body, err = d.DecodeBytes(); err != nil {
			return err
		}
		if m.BornAt, err = d.DecodeInt64(); err != nil {
			return err
		}
	}
	return nil
}

// EncodeMsgpack implements msgpack.CustomEncoder. A pull reply's messages
// share their topic, queue and broker, which go once; each message's ID
// goes as its commitlog offset and size.
func (r *PullReply) EncodeMsgpack(e *msgpack.Encoder) error {
	var topic, broker string
	var queue uint32
	if len(r.Msgs) > 0 {
		topic, queue = r.Msgs[0].Topic, r.Msgs[0].Queue
		broker, _, _, _ = ParseID(r.Msgs[0].ID)
	}
	_ = e.EncodeArrayLen(8)
	_ = e.EncodeInt(r.Next)
	_ = e.EncodeInt(r.Min)
	_ = e.EncodeInt(r.Max)
	_ = e.EncodeBool(r.Moved)
	_ = e.EncodeString(broker)
	_ = e.EncodeString(topic)
	_ = e.EncodeUint(uint64(queue))
	if err := e.EncodeArrayLen(len(r.Msgs)); err != nil {
		return err
	}
	for i := range r.Msgs {
		m := &r.Msgs[i]
		off, size := m.Offset, m.Size
		if size <= 0 {
			var b string
			var err error
			if b, off, size, err = ParseID(m.ID); err != nil || b != broker {
				return fmt.Errorf("%w: message ID %q in a pull reply from %s", ErrInvalid, m.ID, broker)
			}
		}
		if m.Topic != topic || m.Queue != queue {
			return fmt.Errorf("%w: a pull reply mixes topics or queues", ErrInvalid)
		}
		_ = e.EncodeArrayLen(7)
		_ = e.EncodeInt(off)
		_ = e.EncodeInt(int64(size))
		_ = e.EncodeInt(m.QueueOffset)
		if err := encodeProps(e, m.Props); err != nil {
			return err
		}
		_ = e.EncodeBytes(m.Body)
		_ = e.EncodeInt(m.BornAt)
		if err := e.EncodeInt(m.StoredAt); err != nil {
			return err
		}
	}
	return nil
}

// DecodeMsgpack implements msgpack.CustomDecoder. Bodies are read into
// shared 64 KiB slabs: one allocation for many messages.
func (r *PullReply) DecodeMsgpack(d *msgpack.Decoder) (err error) {
	if err := arrayLen(d, 8, "pull reply"); err != nil {
		return err
	}
	if r.Next, err = d.DecodeInt64(); err != nil {
		return err
	}
	if r.Min, err = d.DecodeInt64(); err != nil {
		return err
	}
	if r.Max, err = d.DecodeInt64(); err != nil {
		return err
	}
	if r.Moved, err = d.DecodeBool(); err != nil {
		return err
	}
	broker, err := d.DecodeString()
	if err != nil {
		return err
	}
	topic, err := d.DecodeString()
	if err != nil {
		return err
	}
	queue, err := d.DecodeUint32()
	if err != nil {
		return err
	}
	n, err := d.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n > MaxPull {
		return fmt.Errorf("%w: pull reply of %d messages (at most %d)", ErrInvalid, n, MaxPull)
	}
	r.Msgs = make([]StoredMsg, max(n, 0))
	var slab []byte
	for i := range r.Msgs {
		m := &r.Msgs[i]
		m.Topic, m.Queue = topic, queue
		if err := arrayLen(d, 7, "stored message"); err != nil {
			return err
		}
		off, err := d.DecodeInt64()
		if err != nil {
			return err
		}
		size, err := d.DecodeInt32()
		if err != nil {
			return err
		}
		if off < 0 || size <= 0 {
			return fmt.Errorf("%w: message offset %d size %d", ErrInvalid, off, size)
		}
		m.ID = FormatID(broker, off, size)
		if m.QueueOffset, err = d.DecodeInt64(); err != nil {
			return err
		}
		if m.Props, err = decodeProps(d); err != nil {
			return err
		}
		bl, err := d.DecodeBytesLen()
		if err != nil {
			return err
		}
		if bl > MaxBodyBytes {
			return fmt.Errorf("%w: body of %d bytes", ErrInvalid, bl)
		}
		if bl >= 0 {
			if bl > len(slab) {
				// Room for this body and as many more of its size as are
				// left (up to 64 KiB): a short reply gets a short slab.
				slab = make([]byte, max(bl, min(64<<10, bl*(n-i))))
			}
			m.Body, slab = slab[:bl:bl], slab[bl:]
			if err := d.ReadFull(m.Body); err != nil {
				return err
			}
		}
		if m.BornAt, err = d.DecodeInt64(); err != nil {
			return err
		}
		if m.StoredAt, err = d.DecodeInt64(); err != nil {
			return err
		}
	}
	return nil
}

func propsHint(p map[string]string) int {
	n := 1
	for k, v := range p {
		n += len(k) + len(v) + 4
	}
	return n
}

// SizeHint estimates the encoded size (the codec sizes its buffer once).
func (r *SendRequest) SizeHint() int {
	n := 32 + len(r.Topic)
	for i := range r.Msgs {
		n += 16 + len(r.Msgs[i].Body) + propsHint(r.Msgs[i].Props)
	}
	return n
}

// SizeHint estimates the encoded size.
func (r *PullReply) SizeHint() int {
	n := 40
	for i := range r.Msgs {
		m := &r.Msgs[i]
		n += 48 + len(m.ID) + len(m.Topic) + len(m.Body) + propsHint(m.Props)
	}
	return n
}

// internKey returns the reserved property names without allocating.
func internKey(b []byte) string {
	switch string(b) {
	case PropID:
		return PropID
	case PropTags:
		return PropTags
	case PropKeys:
		return PropKeys
	case PropTrace:
		return PropTrace
	case PropXID:
		return PropXID
	case PropReconsume:
		return PropReconsume
	case PropRealTopic:
		return PropRealTopic
	}
	return string(b)
}
