// Package apidoc describes Tangram's HTTP API as OpenAPI 3.1. Each
// component lists its routes (method, path, summary, the Go types of the
// request and response bodies, the statuses it answers); Spec turns the
// lists into one document, deriving every schema from the Go types by
// reflection so the document cannot drift from what the handlers encode.
// server/ checks that the routes listed are exactly the routes mounted.
package apidoc

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Route documents one HTTP route.
type Route struct {
	Method, Path string // as mounted: "GET", "/api/v1/config/apps/{app}"
	Summary      string
	Tag          string  // the component: config, registry, jobs, auth, platform
	Query        []Param // query parameters
	// Body is a value of the request body's type (nil: no body).
	Body any
	// Status is the success status (default 200); Response a value of
	// its body's type (nil: no body). Text marks a text/plain answer.
	Status   int
	Response any
	Text     bool
	// Also lists further statuses the route answers besides the common
	// errors (e.g. 304, 409).
	Also []int
	// Public routes need no token.
	Public bool
}

// Param is a query parameter.
type Param struct {
	Name, Description string
	Type              string // "string" (default), "integer", "boolean"
}

// Q is shorthand for a string query parameter.
func Q(name, desc string) Param { return Param{Name: name, Description: desc} }

// Key is "METHOD path", the form the mux registers.
func (r Route) Key() string { return r.Method + " " + r.Path }

// Info heads the document.
type Info struct {
	Title, Version, Description string
}

var pathParam = regexp.MustCompile(`\{([a-zA-Z_]+)\.{0,3}\}`)

// Spec builds the OpenAPI 3.1 document for routes.
func Spec(info Info, routes []Route) (map[string]any, error) {
	g := &gen{schemas: map[string]any{}, seen: map[reflect.Type]string{}}
	paths := map[string]any{}
	ids := map[string]bool{}
	for _, r := range routes {
		if r.Method == "" || !strings.HasPrefix(r.Path, "/") || r.Summary == "" || r.Tag == "" {
			return nil, fmt.Errorf("apidoc: route %q lacks a method, path, summary or tag", r.Key())
		}
		op := map[string]any{"summary": r.Summary, "tags": []string{r.Tag}}
		id := operationID(r)
		if ids[id] {
			return nil, fmt.Errorf("apidoc: route %q listed twice", r.Key())
		}
		ids[id] = true
		op["operationId"] = id
		var params []any
		for _, m := range pathParam.FindAllStringSubmatch(r.Path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, q := range r.Query {
			t := q.Type
			if t == "" {
				t = "string"
			}
			params = append(params, map[string]any{"name": q.Name, "in": "query", "description": q.Description, "schema": map[string]any{"type": t}})
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		if r.Body != nil {
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{
				"application/json": map[string]any{"schema": g.schema(reflect.TypeOf(r.Body))}}}
		}
		status := r.Status
		if status == 0 {
			status = 200
		}
		resp := map[string]any{"description": statusText(status)}
		switch {
		case r.Text:
			resp["content"] = map[string]any{"text/plain": map[string]any{"schema": map[string]any{"type": "string"}}}
		case r.Response != nil:
			resp["content"] = map[string]any{"application/json": map[string]any{"schema": g.schema(reflect.TypeOf(r.Response))}}
		}
		responses := map[string]any{strconv.Itoa(status): resp}
		errs := []int{400, 401, 403, 404, 500, 503}
		if r.Public {
			errs = []int{500, 503}
			op["security"] = []any{}
		}
		for _, s := range append(errs, r.Also...) {
			if s < 400 {
				responses[strconv.Itoa(s)] = map[string]any{"description": statusText(s)}
				continue
			}
			responses[strconv.Itoa(s)] = map[string]any{"$ref": "#/components/responses/Error"}
		}
		op["responses"] = responses
		item, _ := paths[oaPath(r.Path)].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[oaPath(r.Path)] = item
		}
		item[strings.ToLower(r.Method)] = op
	}
	g.schemas["Error"] = map[string]any{"type": "object", "required": []string{"error"}, "properties": map[string]any{
		"error": map[string]any{"type": "object", "required": []string{"code", "message"}, "properties": map[string]any{
			"code":    map[string]any{"type": "string", "description": "a code from the error catalogue (docs/errors.md)"},
			"message": map[string]any{"type": "string"},
			"details": map[string]any{},
		}}}}
	return map[string]any{
		"openapi": "3.1.0",
		"info":    map[string]any{"title": info.Title, "version": info.Version, "description": info.Description},
		"components": map[string]any{
			"schemas":         g.schemas,
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer", "description": "an API token (tgm_…), or a console session cookie with its X-CSRF-Token"}},
			"responses": map[string]any{"Error": map[string]any{"description": "an error in the API envelope",
				"content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Error"}}}}},
		},
		"security": []any{map[string]any{"bearer": []any{}}},
		"paths":    paths,
	}, nil
}

// oaPath drops Go's {name...} wildcard dots.
func oaPath(p string) string { return strings.ReplaceAll(p, "...}", "}") }

func operationID(r Route) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(r.Method))
	for _, part := range strings.Split(strings.TrimPrefix(r.Path, "/api/v1"), "/") {
		part = strings.Trim(part, "{}.")
		if part == "" {
			continue
		}
		b.WriteString(strings.ToUpper(part[:1]))
		b.WriteString(strings.ReplaceAll(part[1:], "-", "_"))
	}
	return b.String()
}

func statusText(status int) string {
	switch status {
	case 200:
		return "OK"
	case 201:
		return "Created"
	case 202:
		return "Accepted"
	case 204:
		return "No Content"
	case 304:
		return "Not Modified"
	}
	return "status " + strconv.Itoa(status)
}

type gen struct {
	schemas map[string]any
	seen    map[reflect.Type]string
}

var (
	timeType      = reflect.TypeOf(time.Time{})
	rawType       = reflect.TypeOf(json.RawMessage(nil))
	marshalerType = reflect.TypeOf((*json.Marshaler)(nil)).Elem()
	textType      = reflect.TypeOf((*encoding.TextMarshaler)(nil)).Elem()
)

// schema returns the JSON schema of t: a $ref for named struct types
// (defined once under components), inline otherwise.
func (g *gen) schema(t reflect.Type) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == rawType:
		return map[string]any{}
	case t.Implements(marshalerType) || reflect.PointerTo(t).Implements(marshalerType) ||
		t.Implements(textType) || reflect.PointerTo(t).Implements(textType):
		return map[string]any{"type": "string"}
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string", "contentEncoding": "base64"}
		}
		return map[string]any{"type": "array", "items": g.schema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.schema(t.Elem())}
	case reflect.Interface:
		return map[string]any{}
	case reflect.Struct:
		name := schemaName(t)
		if name == "" { // anonymous or generic: inline
			return g.object(t)
		}
		if _, ok := g.seen[t]; !ok {
			g.seen[t] = name
			g.schemas[name] = nil // placeholder against recursion
			g.schemas[name] = g.object(t)
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	}
	return map[string]any{}
}

// schemaName is pkg.Type for named, non-generic struct types.
func schemaName(t reflect.Type) string {
	if t.Name() == "" || strings.Contains(t.Name(), "[") {
		return ""
	}
	pkg := t.PkgPath()
	if i := strings.LastIndex(pkg, "/"); i >= 0 {
		pkg = pkg[i+1:]
	}
	return pkg + "." + t.Name()
}

func (g *gen) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	g.fields(t, props)
	return map[string]any{"type": "object", "properties": props, "additionalProperties": false}
}

func (g *gen) fields(t reflect.Type, props map[string]any) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				g.fields(ft, props)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		props[name] = g.schema(f.Type)
	}
}

// Paths returns the route keys of routes, sorted.
func Paths(routes []Route) []string {
	out := make([]string, len(routes))
	for i, r := range routes {
		out[i] = r.Key()
	}
	sort.Strings(out)
	return out
}
