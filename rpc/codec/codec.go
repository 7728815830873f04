// Package codec holds the body encodings of Tangram RPC: protobuf (schema
// driven: only values on the wire), JSON and msgpack (self-describing). Each
// has a one-byte ID carried in every frame, so a server answers in the codec
// the caller used.
package codec

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
	"google.golang.org/protobuf/proto"
)

// Codec encodes and decodes message bodies. Implementations are safe for
// concurrent use.
type Codec interface {
	// ID is the byte that names the codec on the wire.
	ID() uint8
	// Name is the codec's name in options and logs ("proto", "json", "msgpack").
	Name() string
	// Append encodes v onto dst and returns the extended slice.
	Append(dst []byte, v any) ([]byte, error)
	// Unmarshal decodes data into v, a pointer.
	Unmarshal(data []byte, v any) error
}

// Wire IDs.
const (
	IDProto   uint8 = 1
	IDJSON    uint8 = 2
	IDMsgpack uint8 = 3
)

// The built-in codecs.
var (
	Proto   Codec = protoCodec{}
	JSON    Codec = jsonCodec{}
	Msgpack Codec = msgpackCodec{}
)

var byID = [256]Codec{IDProto: Proto, IDJSON: JSON, IDMsgpack: Msgpack}

// ByID returns the codec with the wire ID, or nil.
func ByID(id uint8) Codec { return byID[id] }

// ByName returns the codec named name, or an error listing the names.
func ByName(name string) (Codec, error) {
	for _, c := range byID {
		if c != nil && c.Name() == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("codec: unknown codec %q (want proto, json or msgpack)", name)
}

// For returns the codec a value is sent with when the caller did not choose:
// protobuf for protobuf messages, msgpack for everything else.
func For(v any) Codec {
	if _, ok := v.(proto.Message); ok {
		return Proto
	}
	return Msgpack
}

type protoCodec struct{}

func (protoCodec) ID() uint8    { return IDProto }
func (protoCodec) Name() string { return "proto" }

func (protoCodec) Append(dst []byte, v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return dst, fmt.Errorf("codec proto: %T is not a protobuf message", v)
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, m)
}

func (protoCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("codec proto: cannot decode into %T: not a protobuf message", v)
	}
	if err := proto.Unmarshal(data, m); err != nil {
		return fmt.Errorf("codec proto: %w", err)
	}
	return nil
}

type jsonCodec struct{}

func (jsonCodec) ID() uint8    { return IDJSON }
func (jsonCodec) Name() string { return "json" }

func (jsonCodec) Append(dst []byte, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return dst, fmt.Errorf("codec json: %w", err)
	}
	return append(dst, b...), nil
}

func (jsonCodec) Unmarshal(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("codec json: %w", err)
	}
	return nil
}

type msgpackCodec struct{}

func (msgpackCodec) ID() uint8    { return IDMsgpack }
func (msgpackCodec) Name() string { return "msgpack" }

func (msgpackCodec) Append(dst []byte, v any) ([]byte, error) {
	// Encode straight onto dst with a pooled encoder: no intermediate
	// buffer to allocate and copy.
	buf := bytes.NewBuffer(dst)
	if h, ok := v.(interface{ SizeHint() int }); ok {
		buf.Grow(h.SizeHint()) // one allocation for a large body
	}
	enc := msgpack.GetEncoder()
	enc.Reset(buf)
	err := enc.Encode(v)
	msgpack.PutEncoder(enc)
	if err != nil {
		return dst, fmt.Errorf("codec msgpack: %w", err)
	}
	return buf.Bytes(), nil
}

func (msgpackCodec) Unmarshal(data []byte, v any) error {
	if err := checkMsgpack(data); err != nil {
		return err
	}
	if err := msgpack.Unmarshal(data, v); err != nil {
		return fmt.Errorf("codec msgpack: %w", err)
	}
	return nil
}
