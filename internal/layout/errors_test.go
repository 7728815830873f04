package layout_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestSentinelsNameTheirPackage holds the error contract's rule for Go
// callers and log readers: every exported sentinel (var ErrX =
// errors.New / errcode.New) starts with its package's name or path and a
// colon, and no two components share a prefix (a "store: closed" line then
// says which store). docs/errors.md.
func TestSentinelsNameTheirPackage(t *testing.T) {
	root := "../.."
	fset := token.NewFileSet()
	owner := map[string]string{} // prefix -> dir
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel != "." && (rel == "bench" || rel == "examples" || strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		dir := filepath.ToSlash(filepath.Dir(rel))
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.VAR {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !strings.HasPrefix(name.Name, "Err") || i >= len(vs.Values) {
						continue
					}
					msg, ok := sentinelText(vs.Values[i])
					if !ok {
						continue
					}
					checked++
					prefix, _, found := strings.Cut(msg, ": ")
					// A component's server package speaks as the component
					// ("config: server closed" from config/server).
					component := strings.TrimSuffix(dir, "/server")
					if !found || (prefix != f.Name.Name && prefix != dir && prefix != component) {
						t.Errorf("%s: %s = %q: want the message to start with %q or %q", rel, name.Name, msg, f.Name.Name+": ", dir+": ")
						continue
					}
					if o, dup := owner[prefix]; dup && o != component {
						t.Errorf("%s: %s: prefix %q is used by %s too; use the package path", rel, name.Name, prefix, o)
					}
					owner[prefix] = component
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Fatalf("checked only %d sentinels; is the walk wrong?", checked)
	}
}

// sentinelText returns the message of errors.New("…") or
// errcode.New(code, "…").
func sentinelText(e ast.Expr) (string, bool) {
	call, ok := e.(*ast.CallExpr)
	if !ok {
		return "", false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != "New" {
		return "", false
	}
	pkg, ok := sel.X.(*ast.Ident)
	if !ok || (pkg.Name != "errors" && pkg.Name != "errcode") || len(call.Args) == 0 {
		return "", false
	}
	lit, ok := call.Args[len(call.Args)-1].(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}
