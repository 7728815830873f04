package proxy

import (
	"database/sql"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Column types (the protocol's codes).
const (
	typeDecimal    = 0x00
	typeTiny       = 0x01
	typeShort      = 0x02
	typeLong       = 0x03
	typeFloat      = 0x04
	typeDouble     = 0x05
	typeNull       = 0x06
	typeTimestamp  = 0x07
	typeLongLong   = 0x08
	typeInt24      = 0x09
	typeDate       = 0x0a
	typeTime       = 0x0b
	typeDateTime   = 0x0c
	typeYear       = 0x0d
	typeNewDate    = 0x0e
	typeVarChar    = 0x0f
	typeBit        = 0x10
	typeJSON       = 0xf5
	typeNewDecimal = 0xf6
	typeEnum       = 0xf7
	typeSet        = 0xf8
	typeTinyBlob   = 0xf9
	typeMediumBlob = 0xfa
	typeLongBlob   = 0xfb
	typeBlob       = 0xfc
	typeVarString  = 0xfd
	typeString     = 0xfe
	typeGeometry   = 0xff
)

// Column flags.
const (
	flagNotNull  = 1 << 0
	flagBlob     = 1 << 4
	flagUnsigned = 1 << 5
	flagBinary   = 1 << 7
	flagEnum     = 1 << 8
	flagSet      = 1 << 11
	flagNum      = 1 << 15
)

const charsetBinary = 63

// column is a result column as the proxy describes it to clients.
type column struct {
	name     string
	typ      byte
	flags    uint16
	charset  uint16
	length   uint32
	decimals byte
	// fsp is a time column's fractional digits (-1: unknown, as many as
	// the value has).
	fsp int
}

// columnOf describes a data source's column (database/sql's view of it,
// from go-sql-driver/mysql) in the protocol's terms.
func columnOf(name string, ct *sql.ColumnType) column {
	c := column{name: name, charset: charsetUTF8MB4, decimals: 0x1f, fsp: -1}
	tn := ""
	if ct != nil {
		tn = ct.DatabaseTypeName()
		if n, ok := ct.Nullable(); ok && !n {
			c.flags |= flagNotNull
		}
	}
	if rest, ok := strings.CutPrefix(tn, "UNSIGNED "); ok {
		tn = rest
		c.flags |= flagUnsigned
	}
	number := func(t byte, length uint32) {
		c.typ, c.length, c.charset, c.decimals = t, length, charsetBinary, 0
		c.flags |= flagNum | flagBinary
	}
	binaryText := func(t byte) {
		c.typ, c.charset = t, charsetBinary
		c.flags |= flagBinary
	}
	switch tn {
	case "TINYINT":
		number(typeTiny, 4)
	case "SMALLINT":
		number(typeShort, 6)
	case "MEDIUMINT":
		number(typeInt24, 9)
	case "INT":
		number(typeLong, 11)
	case "BIGINT":
		number(typeLongLong, 20)
	case "YEAR":
		number(typeYear, 4)
	case "FLOAT":
		number(typeFloat, 12)
		c.decimals = 0x1f
	case "DOUBLE":
		number(typeDouble, 22)
		c.decimals = 0x1f
	case "DECIMAL":
		number(typeNewDecimal, 65)
		c.flags &^= flagBinary
		if ct != nil {
			if p, s, ok := ct.DecimalSize(); ok {
				c.length, c.decimals = uint32(p+2), byte(s)
			}
		}
	case "DATE":
		c.typ, c.length, c.charset, c.decimals = typeDate, 10, charsetBinary, 0
		c.flags |= flagBinary
	case "DATETIME", "TIMESTAMP", "TIME":
		c.typ, c.length, c.charset, c.decimals = typeDateTime, 19, charsetBinary, 0
		if tn == "TIMESTAMP" {
			c.typ = typeTimestamp
		} else if tn == "TIME" {
			c.typ, c.length = typeTime, 10
		}
		c.flags |= flagBinary
		// The fractional digits (DATETIME(3)): what the text protocol
		// writes and the binary one's readers pad to.
		c.fsp = -1
		if ct != nil {
			if p, _, ok := ct.DecimalSize(); ok && p >= 0 && p <= 6 {
				c.fsp, c.decimals = int(p), byte(p)
				if p > 0 {
					c.length += uint32(p) + 1
				}
			}
		}
		if c.fsp < 0 {
			c.decimals = 6
		}
	case "BIT":
		binaryText(typeBit)
		c.length = 64
	case "CHAR":
		c.typ, c.length = typeString, 255*4
	case "BINARY":
		binaryText(typeString)
		c.length = 255
	case "VARCHAR", "":
		c.typ, c.length = typeVarString, 65535*4
	case "VARBINARY":
		binaryText(typeVarString)
		c.length = 65535
	case "ENUM":
		c.typ, c.length = typeString, 255*4
		c.flags |= flagEnum
	case "SET":
		c.typ, c.length = typeString, 255*4
		c.flags |= flagSet
	case "TINYTEXT", "TEXT", "MEDIUMTEXT", "LONGTEXT", "JSON":
		c.typ, c.length = typeBlob, math.MaxUint32
		c.flags |= flagBlob
	case "TINYBLOB", "BLOB", "MEDIUMBLOB", "LONGBLOB", "GEOMETRY", "VECTOR":
		binaryText(typeBlob)
		c.length = math.MaxUint32
		c.flags |= flagBlob
	case "NULL":
		c.typ, c.charset, c.decimals = typeNull, charsetBinary, 0
	default:
		c.typ, c.length = typeVarString, 65535*4
	}
	if ct != nil {
		if n, ok := ct.Length(); ok && n > 0 && n <= math.MaxUint32 {
			c.length = uint32(n)
		}
	}
	return c
}

// appendColumn appends a column definition (Protocol::ColumnDefinition41).
func appendColumn(b []byte, schema, table string, c column) []byte {
	b = appendLenStr(b, "def")
	b = appendLenStr(b, schema)
	b = appendLenStr(b, table)
	b = appendLenStr(b, table)
	b = appendLenStr(b, c.name)
	b = appendLenStr(b, c.name)
	b = append(b, 0x0c)
	b = appendU16(b, c.charset)
	b = appendU32(b, c.length)
	b = append(b, c.typ)
	b = appendU16(b, c.flags)
	b = append(b, c.decimals, 0, 0)
	return b
}

// appendText appends a value in the text protocol (NULL as 0xfb, any
// other value as its text).
func appendText(b []byte, v any, c column) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, 0xfb), nil
	case []byte:
		return appendLenStr(b, x), nil
	case string:
		return appendLenStr(b, x), nil
	case int64:
		return appendLenStr(b, strconv.AppendInt(nil, x, 10)), nil
	case uint64:
		return appendLenStr(b, strconv.AppendUint(nil, x, 10)), nil
	case float64:
		bits := 64
		if c.typ == typeFloat {
			bits = 32
		}
		return appendLenStr(b, strconv.AppendFloat(nil, x, 'g', -1, bits)), nil
	case float32:
		return appendLenStr(b, strconv.AppendFloat(nil, float64(x), 'g', -1, 32)), nil
	case bool:
		if x {
			return appendLenStr(b, "1"), nil
		}
		return appendLenStr(b, "0"), nil
	case time.Time:
		return appendLenStr(b, formatTime(x, c.typ, c.fsp)), nil
	case int:
		return appendLenStr(b, strconv.AppendInt(nil, int64(x), 10)), nil
	case int32:
		return appendLenStr(b, strconv.AppendInt(nil, int64(x), 10)), nil
	default:
		return b, fmt.Errorf("proxy: column %s: cannot send a %T", c.name, v)
	}
}

// formatTime writes t as MySQL writes a DATE or a DATETIME: fsp
// fractional digits (fsp < 0: only those the value has).
func formatTime(t time.Time, typ byte, fsp int) string {
	if typ == typeDate {
		return t.Format("2006-01-02")
	}
	switch {
	case fsp > 0:
		return t.Format("2006-01-02 15:04:05." + strings.Repeat("0", min(fsp, 6)))
	case fsp < 0 && t.Nanosecond() != 0:
		return t.Format("2006-01-02 15:04:05.999999")
	}
	return t.Format("2006-01-02 15:04:05")
}

// appendBinary appends a non-NULL value in the binary protocol, in the
// form its column's type has.
func appendBinary(b []byte, v any, c column) ([]byte, error) {
	switch c.typ {
	case typeTiny, typeShort, typeYear, typeInt24, typeLong, typeLongLong:
		n, err := toUint64(v, c.flags&flagUnsigned != 0)
		if err != nil {
			return b, fmt.Errorf("proxy: column %s: %w", c.name, err)
		}
		switch c.typ {
		case typeTiny:
			return append(b, byte(n)), nil
		case typeShort, typeYear:
			return appendU16(b, uint16(n)), nil
		case typeInt24, typeLong:
			return appendU32(b, uint32(n)), nil
		default:
			return appendU64(b, n), nil
		}
	case typeFloat, typeDouble:
		f, err := toFloat(v)
		if err != nil {
			return b, fmt.Errorf("proxy: column %s: %w", c.name, err)
		}
		if c.typ == typeFloat {
			return appendU32(b, math.Float32bits(float32(f))), nil
		}
		return appendU64(b, math.Float64bits(f)), nil
	case typeDate, typeDateTime, typeTimestamp:
		t, err := toTime(v)
		if err != nil {
			return b, fmt.Errorf("proxy: column %s: %w", c.name, err)
		}
		return appendBinaryTime(b, t, c.typ), nil
	case typeTime:
		s, err := textOf(v)
		if err != nil {
			return b, fmt.Errorf("proxy: column %s: %w", c.name, err)
		}
		return appendBinaryDuration(b, s)
	default:
		out, err := appendText(b, v, c)
		return out, err
	}
}

func textOf(v any) (string, error) {
	switch x := v.(type) {
	case []byte:
		return string(x), nil
	case string:
		return x, nil
	}
	return "", fmt.Errorf("a %T where text was expected", v)
}

// toUint64 is an integer value as the protocol's unsigned bits (a
// negative number in two's complement).
func toUint64(v any, unsigned bool) (uint64, error) {
	switch x := v.(type) {
	case int64:
		return uint64(x), nil
	case uint64:
		return x, nil
	case int:
		return uint64(x), nil
	case int32:
		return uint64(int64(x)), nil
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	case []byte, string:
		s, _ := textOf(x)
		if unsigned {
			return strconv.ParseUint(s, 10, 64)
		}
		n, err := strconv.ParseInt(s, 10, 64)
		return uint64(n), err
	}
	return 0, fmt.Errorf("a %T where an integer was expected", v)
}

func toFloat(v any) (float64, error) {
	switch x := v.(type) {
	case float64:
		return x, nil
	case float32:
		return float64(x), nil
	case int64:
		return float64(x), nil
	case uint64:
		return float64(x), nil
	case []byte, string:
		s, _ := textOf(x)
		return strconv.ParseFloat(s, 64)
	}
	return 0, fmt.Errorf("a %T where a number was expected", v)
}

func toTime(v any) (time.Time, error) {
	switch x := v.(type) {
	case time.Time:
		return x, nil
	case []byte, string:
		s, _ := textOf(x)
		for _, layout := range []string{"2006-01-02 15:04:05.999999999", "2006-01-02"} {
			if t, err := time.Parse(layout, s); err == nil {
				return t, nil
			}
		}
		if strings.HasPrefix(s, "0000-00-00") {
			return time.Time{}, nil
		}
		return time.Time{}, fmt.Errorf("%q is not a date and time", s)
	}
	return time.Time{}, fmt.Errorf("a %T where a time was expected", v)
}

// appendBinaryTime appends a DATE or DATETIME in the binary protocol: a
// length (0, 4, 7 or 11) and only the fields it needs.
func appendBinaryTime(b []byte, t time.Time, typ byte) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	us := t.Nanosecond() / 1000
	switch {
	case typ == typeDate || (h == 0 && mi == 0 && s == 0 && us == 0):
		return append(appendU16(append(b, 4), uint16(y)), byte(mo), byte(d))
	case us == 0:
		return append(appendU16(append(b, 7), uint16(y)), byte(mo), byte(d), byte(h), byte(mi), byte(s))
	default:
		b = append(appendU16(append(b, 11), uint16(y)), byte(mo), byte(d), byte(h), byte(mi), byte(s))
		return appendU32(b, uint32(us))
	}
}

// appendBinaryDuration appends a TIME given as text ([-]H:MM:SS[.f]).
func appendBinaryDuration(b []byte, s string) ([]byte, error) {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	hms, frac, _ := strings.Cut(s, ".")
	parts := strings.Split(hms, ":")
	if len(parts) != 3 {
		return b, fmt.Errorf("%q is not a time", s)
	}
	var n [3]uint64
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return b, fmt.Errorf("%q is not a time", s)
		}
		n[i] = v
	}
	var us uint64
	if frac != "" {
		f := (frac + "000000")[:6]
		v, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return b, fmt.Errorf("%q is not a time", s)
		}
		us = v
	}
	if n[0] == 0 && n[1] == 0 && n[2] == 0 && us == 0 {
		return append(b, 0), nil
	}
	days, hours := n[0]/24, n[0]%24
	l := byte(8)
	if us != 0 {
		l = 12
	}
	b = append(b, l)
	if neg {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = appendU32(b, uint32(days))
	b = append(b, byte(hours), byte(n[1]), byte(n[2]))
	if us != 0 {
		b = appendU32(b, uint32(us))
	}
	return b, nil
}

// readParam decodes one COM_STMT_EXECUTE parameter of type typ (the
// unsigned flag in bit 15) into what the executor passes on: integers
// as int64 (uint64 beyond its range), floats as float64, dates and times
// as text, strings as string and blobs as []byte.
func readParam(r *reader, typ uint16) any {
	unsigned := typ&0x8000 != 0
	switch byte(typ) {
	case typeNull:
		return nil
	case typeTiny:
		v := r.u8("a TINYINT parameter")
		if unsigned {
			return int64(v)
		}
		return int64(int8(v))
	case typeShort, typeYear:
		v := r.u16("a SMALLINT parameter")
		if unsigned {
			return int64(v)
		}
		return int64(int16(v))
	case typeInt24, typeLong:
		v := r.u32("an INT parameter")
		if unsigned {
			return int64(v)
		}
		return int64(int32(v))
	case typeLongLong:
		v := r.u64("a BIGINT parameter")
		if unsigned && v > math.MaxInt64 {
			return v
		}
		return int64(v)
	case typeFloat:
		return float64(math.Float32frombits(r.u32("a FLOAT parameter")))
	case typeDouble:
		return math.Float64frombits(r.u64("a DOUBLE parameter"))
	case typeDate, typeDateTime, typeTimestamp, typeNewDate:
		b := r.bytes(int(r.u8("a date parameter")), "a date parameter")
		return dateText(b)
	case typeTime:
		b := r.bytes(int(r.u8("a time parameter")), "a time parameter")
		return durationText(b)
	case typeTinyBlob, typeMediumBlob, typeLongBlob, typeBlob, typeGeometry, typeBit:
		return []byte(string(r.lenStr("a BLOB parameter")))
	default:
		return string(r.lenStr("a string parameter"))
	}
}

// dateText is a binary DATE/DATETIME as MySQL's text.
func dateText(b []byte) string {
	var y, mo, d, h, mi, s, us int
	if len(b) >= 4 {
		y, mo, d = int(binary.LittleEndian.Uint16(b)), int(b[2]), int(b[3])
	}
	if len(b) >= 7 {
		h, mi, s = int(b[4]), int(b[5]), int(b[6])
	}
	if len(b) >= 11 {
		us = int(binary.LittleEndian.Uint32(b[7:]))
	}
	if len(b) == 4 {
		return fmt.Sprintf("%04d-%02d-%02d", y, mo, d)
	}
	if us != 0 {
		return fmt.Sprintf("%04d-%02d-%02d %02d:%02d:%02d.%06d", y, mo, d, h, mi, s, us)
	}
	return fmt.Sprintf("%04d-%02d-%02d %02d:%02d:%02d", y, mo, d, h, mi, s)
}

// durationText is a binary TIME as MySQL's text.
func durationText(b []byte) string {
	if len(b) < 8 {
		return "00:00:00"
	}
	sign := ""
	if b[0] == 1 {
		sign = "-"
	}
	hours := uint64(binary.LittleEndian.Uint32(b[1:]))*24 + uint64(b[5])
	s := fmt.Sprintf("%s%02d:%02d:%02d", sign, hours, b[6], b[7])
	if len(b) >= 12 {
		if us := binary.LittleEndian.Uint32(b[8:]); us != 0 {
			s += fmt.Sprintf(".%06d", us)
		}
	}
	return s
}
