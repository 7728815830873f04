package config

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Format is a namespace's format.
type Format string

// The namespace formats. Properties namespaces hold key/value items; the
// others hold one document in the item ContentKey.
const (
	Properties Format = "properties"
	YAML       Format = "yaml"
	JSON       Format = "json"
	Text       Format = "text"
)

// ContentKey is the single item of yaml, json and text namespaces.
const ContentKey = "content"

// ParseFormat validates a format name ("yml" and "txt" are accepted).
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(s) {
	case "properties", "props", "":
		return Properties, nil
	case "yaml", "yml":
		return YAML, nil
	case "json":
		return JSON, nil
	case "text", "txt":
		return Text, nil
	}
	return "", fmt.Errorf("%w: format %q (want properties, yaml, json or text)", ErrInvalid, s)
}

// FormatFromName infers the format from a namespace name suffix such as
// "application.yaml"; names without a known suffix are properties.
func FormatFromName(name string) Format {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return Properties
	}
	if f, err := ParseFormat(name[i+1:]); err == nil && name[i+1:] != "" {
		return f
	}
	return Properties
}

// SyntaxError reports a bad document with the line (1-based) of the problem.
type SyntaxError struct {
	Format Format
	Line   int
	Msg    string
}

func (e *SyntaxError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("invalid %s at line %d: %s", e.Format, e.Line, e.Msg)
	}
	return fmt.Sprintf("invalid %s: %s", e.Format, e.Msg)
}

func (e *SyntaxError) Unwrap() error { return ErrInvalid }

// Validate checks a yaml or json document (text is anything valid UTF-8).
func Validate(f Format, content string) error {
	if !utf8.ValidString(content) {
		return &SyntaxError{Format: f, Line: lineOfInvalidUTF8(content), Msg: "not valid UTF-8"}
	}
	switch f {
	case YAML:
		var v any
		dec := yaml.NewDecoder(strings.NewReader(content))
		for {
			err := dec.Decode(&v)
			if err == nil {
				continue
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return yamlError(err)
		}
	case JSON:
		if strings.TrimSpace(content) == "" {
			return &SyntaxError{Format: JSON, Line: 1, Msg: "empty document"}
		}
		dec := json.NewDecoder(strings.NewReader(content))
		var v any
		if err := dec.Decode(&v); err != nil {
			return jsonError(content, err)
		}
		if dec.More() {
			off := dec.InputOffset()
			return &SyntaxError{Format: JSON, Line: lineAt(content, int(off)), Msg: "data after the top-level value"}
		}
	}
	return nil
}

func yamlError(err error) error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: ")
	line := 0
	// yaml.v3 reports "line N: ..." (and "yaml: unmarshal errors:\n  line N: ...").
	if i := strings.Index(msg, "line "); i >= 0 {
		rest := msg[i+5:]
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		if n, err := strconv.Atoi(rest[:j]); err == nil {
			line = n
			msg = strings.TrimSpace(strings.TrimPrefix(rest[j:], ":"))
		}
	}
	return &SyntaxError{Format: YAML, Line: line, Msg: msg}
}

func jsonError(content string, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		// Offset counts the bytes read including the offending one.
		return &SyntaxError{Format: JSON, Line: lineAt(content, int(se.Offset)-1), Msg: se.Error()}
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return &SyntaxError{Format: JSON, Line: lineAt(content, int(te.Offset)), Msg: te.Error()}
	}
	if err.Error() == "unexpected EOF" {
		return &SyntaxError{Format: JSON, Line: strings.Count(content, "\n") + 1, Msg: "unexpected end of document"}
	}
	return &SyntaxError{Format: JSON, Msg: err.Error()}
}

func lineAt(s string, off int) int {
	if off > len(s) {
		off = len(s)
	}
	if off < 0 {
		off = 0
	}
	return strings.Count(s[:off], "\n") + 1
}

func lineOfInvalidUTF8(s string) int {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			return lineAt(s, i)
		}
		i += n
	}
	return 0
}

// KV is one key/value pair read from a file.
type KV struct {
	Key   string
	Value string
}

// ParseProperties reads a Java .properties document: '#' and '!' comments,
// '=' ':' or whitespace separators, backslash line continuations and
// escapes (\t \n \r \f \uXXXX). Errors name the line.
func ParseProperties(doc string) ([]KV, error) {
	if !utf8.ValidString(doc) {
		return nil, &SyntaxError{Format: Properties, Line: lineOfInvalidUTF8(doc), Msg: "not valid UTF-8"}
	}
	var out []KV
	seen := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(doc))
	sc.Buffer(make([]byte, 64*1024), MaxValueBytes*2)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		start := lineNo
		line := strings.TrimLeft(sc.Text(), " \t\f")
		if line == "" || line[0] == '#' || line[0] == '!' {
			continue
		}
		// Join continuation lines: an odd number of trailing backslashes.
		for endsWithContinuation(line) {
			line = line[:len(line)-1]
			if !sc.Scan() {
				break
			}
			lineNo++
			line += strings.TrimLeft(sc.Text(), " \t\f")
		}
		key, value, err := splitProperty(line)
		if err != nil {
			return nil, &SyntaxError{Format: Properties, Line: start, Msg: err.Error()}
		}
		if key == "" {
			return nil, &SyntaxError{Format: Properties, Line: start, Msg: "empty key"}
		}
		if err := ValidKey(key); err != nil {
			return nil, &SyntaxError{Format: Properties, Line: start, Msg: err.Error()}
		}
		if i, dup := seen[key]; dup {
			out[i].Value = value // last one wins, as java.util.Properties does
			continue
		}
		seen[key] = len(out)
		out = append(out, KV{Key: key, Value: value})
	}
	if err := sc.Err(); err != nil {
		return nil, &SyntaxError{Format: Properties, Line: lineNo + 1, Msg: err.Error()}
	}
	return out, nil
}

func endsWithContinuation(s string) bool {
	n := 0
	for i := len(s) - 1; i >= 0 && s[i] == '\\'; i-- {
		n++
	}
	return n%2 == 1
}

func splitProperty(line string) (string, string, error) {
	var key strings.Builder
	i := 0
	for i < len(line) {
		c := line[i]
		if c == '\\' {
			r, n, err := unescape(line[i:])
			if err != nil {
				return "", "", err
			}
			key.WriteRune(r)
			i += n
			continue
		}
		if c == '=' || c == ':' || c == ' ' || c == '\t' || c == '\f' {
			break
		}
		key.WriteByte(c)
		i++
	}
	// Skip whitespace, one separator, whitespace.
	for i < len(line) && (line[i] == ' ' || line[i] == '\t' || line[i] == '\f') {
		i++
	}
	if i < len(line) && (line[i] == '=' || line[i] == ':') {
		i++
	}
	for i < len(line) && (line[i] == ' ' || line[i] == '\t' || line[i] == '\f') {
		i++
	}
	var val strings.Builder
	for i < len(line) {
		if line[i] == '\\' {
			r, n, err := unescape(line[i:])
			if err != nil {
				return "", "", err
			}
			val.WriteRune(r)
			i += n
			continue
		}
		val.WriteByte(line[i])
		i++
	}
	return key.String(), val.String(), nil
}

// unescape decodes the escape at s[0]=='\\', returning the rune and bytes used.
func unescape(s string) (rune, int, error) {
	if len(s) < 2 {
		return 0, 0, errors.New("dangling backslash")
	}
	switch s[1] {
	case 't':
		return '\t', 2, nil
	case 'n':
		return '\n', 2, nil
	case 'r':
		return '\r', 2, nil
	case 'f':
		return '\f', 2, nil
	case 'u':
		if len(s) < 6 {
			return 0, 0, fmt.Errorf("short \\u escape %q", s)
		}
		v, err := strconv.ParseUint(s[2:6], 16, 32)
		if err != nil {
			return 0, 0, fmt.Errorf("bad \\u escape %q", s[:6])
		}
		return rune(v), 6, nil
	}
	r, n := utf8.DecodeRuneInString(s[1:])
	return r, 1 + n, nil
}

// FormatProperties writes items as a .properties document, escaping what
// needs escaping so that ParseProperties reads the same items back.
func FormatProperties(kvs []KV) string {
	var b strings.Builder
	for _, kv := range kvs {
		b.WriteString(escapeProp(kv.Key, true))
		b.WriteString(" = ")
		b.WriteString(escapeProp(kv.Value, false))
		b.WriteByte('\n')
	}
	return b.String()
}

func escapeProp(s string, isKey bool) string {
	var b strings.Builder
	for i, r := range s {
		switch r {
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\f':
			b.WriteString(`\f`)
		case '=', ':':
			if isKey {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		case ' ':
			if isKey || i == 0 {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		case '#', '!':
			if isKey && i == 0 {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		default:
			if r < 0x20 {
				fmt.Fprintf(&b, `\u%04x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	return b.String()
}

// FlattenDocument reads a yaml or json document as flat properties with
// dotted keys (a.b.c) and [i] for list elements, the way Spring and Apollo
// map documents onto properties.
func FlattenDocument(f Format, doc string) ([]KV, error) {
	if err := Validate(f, doc); err != nil {
		return nil, err
	}
	var v any
	var err error
	if f == JSON {
		err = json.Unmarshal([]byte(doc), &v)
	} else {
		err = yaml.Unmarshal([]byte(doc), &v)
	}
	if err != nil {
		return nil, &SyntaxError{Format: f, Msg: err.Error()}
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, &SyntaxError{Format: f, Line: 1, Msg: "top level must be an object to import into a properties namespace"}
	}
	var out []KV
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch x := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				walk(p, x[k])
			}
		case []any:
			for i, e := range x {
				walk(fmt.Sprintf("%s[%d]", prefix, i), e)
			}
		case nil:
			out = append(out, KV{Key: prefix, Value: ""})
		case string:
			out = append(out, KV{Key: prefix, Value: x})
		case float64:
			out = append(out, KV{Key: prefix, Value: strconv.FormatFloat(x, 'f', -1, 64)})
		default:
			out = append(out, KV{Key: prefix, Value: fmt.Sprint(x)})
		}
	}
	walk("", v)
	for _, kv := range out {
		if kv.Key == "" {
			return nil, &SyntaxError{Format: f, Msg: "top level must be an object to import into a properties namespace"}
		}
		if err := ValidKey(kv.Key); err != nil {
			return nil, &SyntaxError{Format: f, Msg: err.Error()}
		}
	}
	return out, nil
}

// FlatDocument renders flat items as a json object or yaml mapping (one
// level, keys as they are), for exporting a properties namespace.
func FlatDocument(f Format, kvs []KV) (string, error) {
	switch f {
	case JSON:
		m := make(map[string]string, len(kvs))
		for _, kv := range kvs {
			m[kv.Key] = kv.Value
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(m); err != nil {
			return "", err
		}
		return buf.String(), nil
	case YAML:
		node := &yaml.Node{Kind: yaml.MappingNode}
		for _, kv := range kvs {
			node.Content = append(node.Content,
				&yaml.Node{Kind: yaml.ScalarNode, Value: kv.Key},
				&yaml.Node{Kind: yaml.ScalarNode, Value: kv.Value, Tag: "!!str"})
		}
		b, err := yaml.Marshal(node)
		return string(b), err
	case Properties:
		return FormatProperties(kvs), nil
	}
	return "", fmt.Errorf("%w: cannot export properties as %s", ErrInvalid, f)
}
