// Package gen writes typed Tangram RPC clients and server registrations for
// Go interfaces — Go's answer to a Java dynamic proxy: the caller holds a
// value implementing the service interface, and every method call becomes a
// remote call. `tangram rpc gen` is its command line.
//
// A method of the interface must have one of two shapes:
//
//	Name(ctx context.Context, req *Req) (*Resp, error) // unary call
//	Name(ctx context.Context, req *Req) error          // oneway call
package gen

import (
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/printer"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// Options selects what to generate.
type Options struct {
	// Dir is the package directory to read.
	Dir string
	// Types names the interfaces to generate for; empty means every
	// interface declared in the package whose methods all have an RPC shape.
	Types []string
	// Service overrides the service name (default: the interface name); only
	// with exactly one type.
	Service string
}

// Method is one RPC method of an interface.
type method struct {
	Name   string
	Req    string // type expression without the leading *
	Resp   string // empty for oneway
	Oneway bool
}

type iface struct {
	Name    string
	Service string
	Methods []method
}

// Result is the generated file.
type Result struct {
	Package string
	File    string // suggested file name, in Dir
	Source  []byte
	Types   []string
}

// Generate reads the package in opts.Dir and returns the generated source.
func Generate(opts Options) (*Result, error) {
	if opts.Service != "" && len(opts.Types) != 1 {
		return nil, errors.New("gen: --service needs exactly one --type")
	}
	fset := token.NewFileSet()
	entries, err := os.ReadDir(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("gen: %w", err)
	}
	var files []*ast.File
	pkg := ""
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") || strings.HasSuffix(n, "_rpc.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(opts.Dir, n), nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, fmt.Errorf("gen: %w", err)
		}
		if pkg == "" {
			pkg = f.Name.Name
		} else if f.Name.Name != pkg && !strings.HasSuffix(f.Name.Name, "_test") {
			return nil, fmt.Errorf("gen: %s: package %s, others are %s", n, f.Name.Name, pkg)
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("gen: no Go files in %s", opts.Dir)
	}
	want := map[string]bool{}
	for _, t := range opts.Types {
		want[t] = true
	}
	var ifaces []iface
	imports := map[string]string{} // name → path
	for _, f := range files {
		fileImports := map[string]string{}
		for _, im := range f.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			name := p[strings.LastIndex(p, "/")+1:]
			if im.Name != nil {
				name = im.Name.Name
			}
			fileImports[name] = p
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, sp := range gd.Specs {
				ts := sp.(*ast.TypeSpec)
				it, ok := ts.Type.(*ast.InterfaceType)
				if !ok || (len(want) > 0 && !want[ts.Name.Name]) || !ast.IsExported(ts.Name.Name) {
					continue
				}
				in, err := readInterface(fset, ts.Name.Name, it, fileImports, imports)
				if err != nil {
					if len(want) > 0 {
						return nil, err
					}
					continue // not an RPC interface; skipped when scanning all
				}
				delete(want, ts.Name.Name)
				ifaces = append(ifaces, *in)
			}
		}
	}
	if len(want) > 0 {
		var missing []string
		for k := range want {
			missing = append(missing, k)
		}
		sort.Strings(missing)
		return nil, fmt.Errorf("gen: no interface %s in package %s", strings.Join(missing, ", "), pkg)
	}
	if len(ifaces) == 0 {
		return nil, fmt.Errorf("gen: package %s has no interface whose methods are all func(ctx, *Req) (*Resp, error) or func(ctx, *Req) error", pkg)
	}
	if opts.Service != "" {
		ifaces[0].Service = opts.Service
	}
	src, err := render(pkg, ifaces, imports)
	if err != nil {
		return nil, err
	}
	res := &Result{Package: pkg, Source: src, File: snake(ifaces[0].Name) + "_rpc.go"}
	for _, in := range ifaces {
		res.Types = append(res.Types, in.Name)
	}
	return res, nil
}

func readInterface(fset *token.FileSet, name string, it *ast.InterfaceType, fileImports, used map[string]string) (*iface, error) {
	in := &iface{Name: name, Service: name}
	for _, m := range it.Methods.List {
		ft, ok := m.Type.(*ast.FuncType)
		if !ok || len(m.Names) != 1 {
			return nil, fmt.Errorf("gen: %s embeds another interface; list its methods instead", name)
		}
		mn := m.Names[0].Name
		bad := fmt.Errorf("gen: %s.%s: want func(ctx context.Context, req *Req) (*Resp, error) or func(ctx context.Context, req *Req) error", name, mn)
		params := flatten(ft.Params)
		results := flatten(ft.Results)
		if len(params) != 2 || expr(fset, params[0]) != "context.Context" {
			return nil, bad
		}
		req, ok := params[1].(*ast.StarExpr)
		if !ok {
			return nil, bad
		}
		md := method{Name: mn, Req: expr(fset, req.X)}
		switch {
		case len(results) == 1 && expr(fset, results[0]) == "error":
			md.Oneway = true
		case len(results) == 2 && expr(fset, results[1]) == "error":
			resp, ok := results[0].(*ast.StarExpr)
			if !ok {
				return nil, bad
			}
			md.Resp = expr(fset, resp.X)
		default:
			return nil, bad
		}
		for _, e := range []ast.Expr{req.X, results[0]} {
			ast.Inspect(e, func(n ast.Node) bool {
				if se, ok := n.(*ast.SelectorExpr); ok {
					if id, ok := se.X.(*ast.Ident); ok {
						if p, ok := fileImports[id.Name]; ok {
							used[id.Name] = p
						}
					}
				}
				return true
			})
		}
		in.Methods = append(in.Methods, md)
	}
	if len(in.Methods) == 0 {
		return nil, fmt.Errorf("gen: %s has no methods", name)
	}
	return in, nil
}

// flatten expands "a, b *T" into one entry per name.
func flatten(fl *ast.FieldList) []ast.Expr {
	if fl == nil {
		return nil
	}
	var out []ast.Expr
	for _, f := range fl.List {
		for range max(len(f.Names), 1) {
			out = append(out, f.Type)
		}
	}
	return out
}

func expr(fset *token.FileSet, e ast.Expr) string {
	var b bytes.Buffer
	printer.Fprint(&b, fset, e)
	return b.String()
}

func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 && !unicode.IsUpper(rune(s[i-1])) {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

func render(pkg string, ifaces []iface, imports map[string]string) ([]byte, error) {
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("// Code generated by \"tangram rpc gen\"; DO NOT EDIT.\n\npackage %s\n\nimport (\n", pkg)
	std := map[string]string{"context": "context"}
	other := map[string]string{"rpc": "github.com/tangram-dev/tangram/rpc"}
	for n, path := range imports {
		if strings.Contains(strings.Split(path, "/")[0], ".") {
			other[n] = path
		} else {
			std[n] = path
		}
	}
	for i, group := range []map[string]string{std, other} {
		if i > 0 {
			p("\n")
		}
		var paths []string
		byPath := map[string]string{}
		for n, path := range group {
			paths = append(paths, path)
			byPath[path] = n
		}
		sort.Strings(paths)
		for _, path := range paths {
			if n := byPath[path]; path[strings.LastIndex(path, "/")+1:] != n {
				p("\t%s %q\n", n, path)
			} else {
				p("\t%q\n", path)
			}
		}
	}
	p(")\n")
	for _, in := range ifaces {
		c := in.Name + "Client"
		p("\n// %s calls the %s service on the servers of an *rpc.Client; it implements\n// %s, so a caller holds it like the local value. Per-call options ride on the\n// context (rpc.WithCallOptions).\n", c, in.Service, in.Name)
		p("type %s struct{ c *rpc.Client }\n\n", c)
		p("// New%s returns a %s using c.\nfunc New%s(c *rpc.Client) *%s { return &%s{c: c} }\n\n", c, c, c, c, c)
		p("var _ %s = (*%s)(nil)\n", in.Name, c)
		for _, m := range in.Methods {
			full := in.Service + "/" + m.Name
			if m.Oneway {
				p("\n// %s sends a oneway %s call: nil means it was sent.\n", m.Name, full)
				p("func (x *%s) %s(ctx context.Context, req *%s) error {\n\treturn x.c.Oneway(ctx, %q, req)\n}\n", c, m.Name, m.Req, full)
				continue
			}
			p("\n// %s calls %s.\n", m.Name, full)
			p("func (x *%s) %s(ctx context.Context, req *%s) (*%s, error) {\n\treturn rpc.Call[%s](ctx, x.c, %q, req)\n}\n", c, m.Name, m.Req, m.Resp, m.Resp, full)
			p("\n// %sAsync starts %s and returns a future for its result.\n", m.Name, full)
			p("func (x *%s) %sAsync(ctx context.Context, req *%s) *rpc.Future[%s] {\n\treturn rpc.Go[%s](ctx, x.c, %q, req)\n}\n", c, m.Name, m.Req, m.Resp, m.Resp, full)
		}
		p("\n// Register%s registers impl's methods on s as the %s service. Calls reach\n// impl through typed handlers: no reflection when a call runs.\n", in.Name, in.Service)
		p("func Register%s(s *rpc.Server, impl %s, opts ...rpc.MethodOption) error {\n", in.Name, in.Name)
		for _, m := range in.Methods {
			full := in.Service + "/" + m.Name
			if m.Oneway {
				p("\tif err := rpc.Handle(s, %q, func(ctx context.Context, req *%s) (*struct{}, error) {\n\t\treturn nil, impl.%s(ctx, req)\n\t}, opts...); err != nil {\n\t\treturn err\n\t}\n", full, m.Req, m.Name)
				continue
			}
			p("\tif err := rpc.Handle(s, %q, impl.%s, opts...); err != nil {\n\t\treturn err\n\t}\n", full, m.Name)
		}
		p("\treturn nil\n}\n")
	}
	out, err := format.Source(b.Bytes())
	if err != nil {
		return nil, fmt.Errorf("gen: formatting the output: %w", err)
	}
	return out, nil
}
