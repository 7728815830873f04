package at

import (
	"database/sql/driver"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// value is one column value of an image, as stored in the undo log: its
// kind keeps the Go type the driver gave (so the undo statement passes
// the database what it read).
type value struct {
	K string `json:"k"` // n null, i int64, f float64, b bool, s string, x bytes (base64), t time (RFC 3339)
	V string `json:"v,omitempty"`
}

func encode(v driver.Value) (value, error) {
	switch x := v.(type) {
	case nil:
		return value{K: "n"}, nil
	case int64:
		return value{K: "i", V: strconv.FormatInt(x, 10)}, nil
	case float64:
		return value{K: "f", V: strconv.FormatFloat(x, 'g', -1, 64)}, nil
	case bool:
		return value{K: "b", V: strconv.FormatBool(x)}, nil
	case string:
		return value{K: "s", V: x}, nil
	case []byte:
		return value{K: "x", V: base64.StdEncoding.EncodeToString(x)}, nil
	case time.Time:
		return value{K: "t", V: x.Format(time.RFC3339Nano)}, nil
	}
	return value{}, fmt.Errorf("txn/at: a column value of type %T cannot be recorded", v)
}

func (v value) decode() (driver.Value, error) {
	var err error
	var out driver.Value
	switch v.K {
	case "n":
		return nil, nil
	case "i":
		out, err = strconv.ParseInt(v.V, 10, 64)
	case "f":
		out, err = strconv.ParseFloat(v.V, 64)
	case "b":
		out, err = strconv.ParseBool(v.V)
	case "s":
		return v.V, nil
	case "x":
		out, err = base64.StdEncoding.DecodeString(v.V)
	case "t":
		out, err = time.Parse(time.RFC3339Nano, v.V)
	default:
		return nil, fmt.Errorf("txn/at: undo log: value kind %q unknown", v.K)
	}
	if err != nil {
		return nil, fmt.Errorf("txn/at: undo log: value %q of kind %s: %w", v.V, v.K, err)
	}
	return out, nil
}

// canon is a value's text for comparing images: drivers give the same
// column as []byte (MySQL's text protocol) or as int64 (its binary
// protocol), so values compare by their text, null apart from "".
func canon(v driver.Value) (string, bool) {
	switch x := v.(type) {
	case nil:
		return "", false
	case int64:
		return strconv.FormatInt(x, 10), true
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), true
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32), true
	case bool:
		if x {
			return "1", true
		}
		return "0", true
	case string:
		return x, true
	case []byte:
		return string(x), true
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano), true
	}
	return fmt.Sprint(v), true
}

func sameValue(a, b driver.Value) bool {
	x, okx := canon(a)
	y, oky := canon(b)
	return okx == oky && x == y
}

// image is a set of rows of one table: its columns, the primary key's
// first (pk of them).
type image struct {
	Cols []string  `json:"cols"`
	PK   int       `json:"pk"`
	Rows [][]value `json:"rows"`
}

// item is the undo record of one statement.
type item struct {
	Kind  string `json:"kind"`  // update, delete, insert
	Table string `json:"table"` // as SQL names it (quoted, with its schema)
	// Name is the table's name in lock keys and messages.
	Name   string `json:"name"`
	Before *image `json:"before,omitempty"`
	After  *image `json:"after,omitempty"`
}

// undoLog is one branch's undo record: its statements in order.
type undoLog struct {
	Items []item `json:"items"`
}

const maxUndo = 64 << 20

func decodeUndo(b []byte) (undoLog, error) {
	var u undoLog
	if len(b) > maxUndo {
		return u, fmt.Errorf("txn/at: undo log of %d bytes: over %d", len(b), maxUndo)
	}
	if err := json.Unmarshal(b, &u); err != nil {
		return u, fmt.Errorf("txn/at: undo log: %w", err)
	}
	for i, it := range u.Items {
		if err := it.check(); err != nil {
			return u, fmt.Errorf("txn/at: undo log item %d: %w", i, err)
		}
	}
	return u, nil
}

func (it item) check() error {
	if it.Table == "" {
		return errors.New("no table")
	}
	var need []*image
	switch it.Kind {
	case "update":
		need = []*image{it.Before, it.After}
	case "delete":
		need = []*image{it.Before}
	case "insert":
		need = []*image{it.After}
	default:
		return fmt.Errorf("kind %q unknown", it.Kind)
	}
	for _, im := range need {
		if im == nil {
			return fmt.Errorf("%s without its image", it.Kind)
		}
		if im.PK < 1 || im.PK > len(im.Cols) {
			return fmt.Errorf("primary key of %d columns in %d", im.PK, len(im.Cols))
		}
		for _, r := range im.Rows {
			if len(r) != len(im.Cols) {
				return fmt.Errorf("row of %d values for %d columns", len(r), len(im.Cols))
			}
		}
	}
	if it.Kind == "update" && len(it.Before.Rows) != len(it.After.Rows) {
		return fmt.Errorf("update with %d rows before and %d after", len(it.Before.Rows), len(it.After.Rows))
	}
	return nil
}

// rowKey is a row's lock key: table and primary key values.
func rowKey(table string, pk []driver.Value) string {
	var sb strings.Builder
	sb.WriteString(table)
	sb.WriteByte(':')
	for i, v := range pk {
		if i > 0 {
			sb.WriteByte(',')
		}
		s, ok := canon(v)
		switch {
		case !ok:
			sb.WriteString("NULL")
		case strings.ContainsAny(s, ",\"\\") || s == "NULL":
			sb.WriteString(strconv.Quote(s))
		default:
			sb.WriteString(s)
		}
	}
	return sb.String()
}

// pkKey is the text of a row's primary key (for matching rows of two
// images).
func pkKey(vals []driver.Value) string { return rowKey("", vals) }
