package apidoc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
)

// Checker holds recorded responses against the documented routes: the
// status must be one the route lists (or an error in the envelope), and a
// JSON body must decode into the documented type with no field left over.
type Checker struct {
	routes map[string]Route
}

// NewChecker returns a Checker for routes.
func NewChecker(routes []Route) *Checker {
	c := &Checker{routes: map[string]Route{}}
	for _, r := range routes {
		c.routes[r.Key()] = r
	}
	return c
}

// Check reports how a response to a request matched by pattern ("METHOD
// /path", as http.Request.Pattern) departs from the document, or nil.
func (c *Checker) Check(pattern string, status int, body []byte) error {
	if status >= 400 {
		var env struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
				Details any    `json:"details"`
			} `json:"error"`
		}
		if err := strict(body, &env); err != nil || env.Error.Code == "" || env.Error.Message == "" {
			return fmt.Errorf("%s answered %d without the error envelope: %s", pattern, status, clip(body))
		}
		return nil
	}
	r, ok := c.routes[pattern]
	if !ok {
		return fmt.Errorf("%s answered %d but is not in the API document", pattern, status)
	}
	want := r.Status
	if want == 0 {
		want = 200
	}
	switch {
	case status == want:
	case slices.Contains(r.Also, status):
		if len(bytes.TrimSpace(body)) != 0 {
			return fmt.Errorf("%s answered %d with a body the document does not describe: %s", pattern, status, clip(body))
		}
		return nil
	default:
		return fmt.Errorf("%s answered %d; the document lists %d%v", pattern, status, want, r.Also)
	}
	if r.Text {
		return nil
	}
	if r.Response == nil {
		if len(bytes.TrimSpace(body)) != 0 {
			return fmt.Errorf("%s answered %d with a body the document does not describe: %s", pattern, status, clip(body))
		}
		return nil
	}
	v := reflect.New(reflect.TypeOf(r.Response))
	if err := strict(body, v.Interface()); err != nil {
		return fmt.Errorf("%s answered %d with a body that does not match the document (%v): %s", pattern, status, err, clip(body))
	}
	return nil
}

func strict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func clip(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}
