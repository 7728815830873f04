package shard

import (
	"fmt"
	"strconv"
	"strings"
)

// Inline expressions, as ShardingSphere writes them (`${…}`, or `$->{…}`
// in YAML where `${` would be read as a property):
//
//   - in data nodes, ranges and lists expand to every combination:
//     `ds_${0..1}.t_order_${[0, 2]}` is ds_0.t_order_0, ds_0.t_order_2,
//     ds_1.t_order_0 and ds_1.t_order_2;
//   - in an algorithm, an arithmetic expression over the sharding columns
//     names the target: `t_order_${order_id % 16}`.

// segment is a piece of an inline expression: literal text, or the body
// of a `${…}` placeholder.
type segment struct {
	text string
	expr bool
}

// splitInline cuts s into literal text and placeholder bodies.
func splitInline(s string) ([]segment, error) {
	var out []segment
	for {
		i := strings.Index(s, "$")
		open := ""
		for i >= 0 {
			if strings.HasPrefix(s[i:], "${") {
				open = "${"
				break
			}
			if strings.HasPrefix(s[i:], "$->{") {
				open = "$->{"
				break
			}
			j := strings.Index(s[i+1:], "$")
			if j < 0 {
				i = -1
				break
			}
			i += 1 + j
		}
		if i < 0 {
			if s != "" {
				out = append(out, segment{text: s})
			}
			return out, nil
		}
		if i > 0 {
			out = append(out, segment{text: s[:i]})
		}
		rest := s[i+len(open):]
		end := strings.Index(rest, "}")
		if end < 0 {
			return nil, fmt.Errorf("%q: %s without its closing }", s, open)
		}
		body := strings.TrimSpace(rest[:end])
		if body == "" {
			return nil, fmt.Errorf("%q: an empty %s}", s, open)
		}
		out = append(out, segment{text: body, expr: true})
		s = rest[end+1:]
	}
}

// maxExpand bounds what one expression may expand to.
const maxExpand = 100_000

// expand returns every string an inline expression of ranges and lists
// stands for, in order (the leftmost placeholder varies slowest).
func expand(s string) ([]string, error) {
	segs, err := splitInline(s)
	if err != nil {
		return nil, err
	}
	out := []string{""}
	for _, sg := range segs {
		alts := []string{sg.text}
		if sg.expr {
			if alts, err = alternatives(sg.text); err != nil {
				return nil, fmt.Errorf("%q: %w", s, err)
			}
		}
		if len(out)*len(alts) > maxExpand {
			return nil, fmt.Errorf("%q: expands to more than %d names", s, maxExpand)
		}
		next := make([]string, 0, len(out)*len(alts))
		for _, o := range out {
			for _, a := range alts {
				next = append(next, o+a)
			}
		}
		out = next
	}
	return out, nil
}

// alternatives reads a placeholder of a data-node expression: `a..b`
// (integers, either direction) or `[x, y, 'z']`.
func alternatives(body string) ([]string, error) {
	if strings.HasPrefix(body, "[") {
		if !strings.HasSuffix(body, "]") {
			return nil, fmt.Errorf("list %q: want [a, b, …]", body)
		}
		var out []string
		for _, it := range strings.Split(body[1:len(body)-1], ",") {
			it = strings.TrimSpace(it)
			if len(it) >= 2 && (it[0] == '\'' || it[0] == '"') && it[len(it)-1] == it[0] {
				it = it[1 : len(it)-1]
			}
			if it == "" {
				return nil, fmt.Errorf("list %q: an empty item", body)
			}
			out = append(out, it)
		}
		return out, nil
	}
	lo, hi, ok := strings.Cut(body, "..")
	if !ok {
		return nil, fmt.Errorf("%q: want a range a..b or a list [a, b]", body)
	}
	a, err1 := strconv.Atoi(strings.TrimSpace(lo))
	b, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("range %q: want integers a..b", body)
	}
	step := 1
	if b < a {
		step = -1
	}
	if distance(int64(a), int64(b)) >= maxExpand {
		return nil, fmt.Errorf("range %q: more than %d values", body, maxExpand)
	}
	var out []string
	for i := a; ; i += step {
		out = append(out, strconv.Itoa(i))
		if i == b {
			break
		}
	}
	return out, nil
}

// template is an algorithm's inline expression, parsed once: literal text
// and arithmetic placeholders over the sharding columns.
type template struct {
	src   string
	parts []tmplPart
}

type tmplPart struct {
	text string
	expr node // nil: text
}

func parseTemplate(s string) (*template, error) {
	segs, err := splitInline(s)
	if err != nil {
		return nil, err
	}
	t := &template{src: s}
	for _, sg := range segs {
		if !sg.expr {
			t.parts = append(t.parts, tmplPart{text: sg.text})
			continue
		}
		n, err := parseArith(sg.text)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", s, err)
		}
		t.parts = append(t.parts, tmplPart{expr: n})
	}
	return t, nil
}

// columns lists the column names the template reads.
func (t *template) columns() []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range t.parts {
		if p.expr != nil {
			p.expr.cols(func(c string) {
				if !seen[c] {
					seen[c] = true
					out = append(out, c)
				}
			})
		}
	}
	return out
}

// eval fills the template with the columns' values.
func (t *template) eval(vals map[string]Value) (string, error) { return t.evalIn(mapEnv(vals)) }

// env gives the columns' values to an expression.
type env interface {
	get(col string) (Value, bool)
}

type mapEnv map[string]Value

func (m mapEnv) get(col string) (Value, bool) { v, ok := m[col]; return v, ok }

// oneEnv is one column's value (no map to allocate per statement).
type oneEnv struct {
	col string
	v   Value
}

func (o *oneEnv) get(col string) (Value, bool) { return o.v, col == o.col }

// evalIn fills the template with the values env gives.
func (t *template) evalIn(vals env) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.expr == nil {
			b.WriteString(p.text)
			continue
		}
		v, err := p.expr.eval(vals)
		if err != nil {
			return "", fmt.Errorf("%s: %w", t.src, err)
		}
		b.WriteString(v.String())
	}
	return b.String(), nil
}

// node is an arithmetic expression: integers, column names, + - * / %,
// unary minus and parentheses. A column whose value is text stands for
// itself (`${region}`), and only then.
type node interface {
	eval(vals env) (Value, error)
	cols(func(string))
}

type numNode int64

func (n numNode) eval(env) (Value, error) { return Int(int64(n)), nil }
func (numNode) cols(func(string))         {}

type colNode string

func (c colNode) eval(vals env) (Value, error) {
	v, ok := vals.get(string(c))
	if !ok {
		return Value{}, fmt.Errorf("no value for column %s", string(c))
	}
	return v, nil
}
func (c colNode) cols(f func(string)) { f(string(c)) }

type negNode struct{ x node }

func (n negNode) eval(vals env) (Value, error) {
	v, err := n.x.eval(vals)
	if err != nil {
		return Value{}, err
	}
	i, err := v.Int64()
	if err != nil {
		return Value{}, err
	}
	return Int(-i), nil
}
func (n negNode) cols(f func(string)) { n.x.cols(f) }

type binNode struct {
	op   byte
	l, r node
}

func (n binNode) cols(f func(string)) { n.l.cols(f); n.r.cols(f) }

func (n binNode) eval(vals env) (Value, error) {
	lv, err := n.l.eval(vals)
	if err != nil {
		return Value{}, err
	}
	rv, err := n.r.eval(vals)
	if err != nil {
		return Value{}, err
	}
	a, err := lv.Int64()
	if err != nil {
		return Value{}, err
	}
	b, err := rv.Int64()
	if err != nil {
		return Value{}, err
	}
	switch n.op {
	case '+':
		return Int(a + b), nil
	case '-':
		return Int(a - b), nil
	case '*':
		return Int(a * b), nil
	case '/', '%':
		if b == 0 {
			return Value{}, fmt.Errorf("division by zero")
		}
		if n.op == '/' {
			return Int(a / b), nil
		}
		// A remainder is never negative here: a negative key still
		// names one of the targets.
		m := a % b
		if m < 0 {
			m += abs(b)
		}
		return Int(m), nil
	}
	return Value{}, fmt.Errorf("operator %c", n.op)
}

// distance is |b - a| without overflow.
func distance(a, b int64) uint64 {
	if b >= a {
		return uint64(b) - uint64(a)
	}
	return uint64(a) - uint64(b)
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// parseArith parses an arithmetic placeholder body.
func parseArith(s string) (node, error) {
	p := &arith{s: s}
	n, err := p.sum()
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i < len(p.s) {
		return nil, fmt.Errorf("unexpected %q at %d in %q", p.s[p.i:], p.i, s)
	}
	return n, nil
}

type arith struct {
	s string
	i int
}

func (p *arith) space() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *arith) sum() (node, error) {
	l, err := p.product()
	if err != nil {
		return nil, err
	}
	for {
		p.space()
		if p.i >= len(p.s) || (p.s[p.i] != '+' && p.s[p.i] != '-') {
			return l, nil
		}
		op := p.s[p.i]
		p.i++
		r, err := p.product()
		if err != nil {
			return nil, err
		}
		l = binNode{op: op, l: l, r: r}
	}
}

func (p *arith) product() (node, error) {
	l, err := p.unary()
	if err != nil {
		return nil, err
	}
	for {
		p.space()
		if p.i >= len(p.s) || (p.s[p.i] != '*' && p.s[p.i] != '/' && p.s[p.i] != '%') {
			return l, nil
		}
		op := p.s[p.i]
		p.i++
		r, err := p.unary()
		if err != nil {
			return nil, err
		}
		l = binNode{op: op, l: l, r: r}
	}
}

func (p *arith) unary() (node, error) {
	p.space()
	if p.i >= len(p.s) {
		return nil, fmt.Errorf("%q ends where a value was expected", p.s)
	}
	c := p.s[p.i]
	switch {
	case c == '-':
		p.i++
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		return negNode{x}, nil
	case c == '(':
		p.i++
		x, err := p.sum()
		if err != nil {
			return nil, err
		}
		p.space()
		if p.i >= len(p.s) || p.s[p.i] != ')' {
			return nil, fmt.Errorf("missing ) in %q", p.s)
		}
		p.i++
		return x, nil
	case c >= '0' && c <= '9':
		j := p.i
		for j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
			j++
		}
		v, err := strconv.ParseInt(p.s[p.i:j], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("number %q: %w", p.s[p.i:j], err)
		}
		p.i = j
		return numNode(v), nil
	case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		j := p.i
		for j < len(p.s) && (p.s[j] == '_' || p.s[j] >= 'a' && p.s[j] <= 'z' || p.s[j] >= 'A' && p.s[j] <= 'Z' || p.s[j] >= '0' && p.s[j] <= '9') {
			j++
		}
		name := strings.ToLower(p.s[p.i:j])
		p.i = j
		return colNode(name), nil
	}
	return nil, fmt.Errorf("unexpected %q at %d in %q", string(c), p.i, p.s)
}
