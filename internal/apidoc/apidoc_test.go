package apidoc_test

import (
	"strings"
	"testing"

	"github.com/tangram-dev/tangram/internal/apidoc"
)

type thing struct {
	Name  string   `json:"name"`
	Tags  []string `json:"tags,omitempty"`
	inner int
}

func TestCheck(t *testing.T) {
	c := apidoc.NewChecker([]apidoc.Route{
		{Method: "GET", Path: "/api/v1/things/{id}", Summary: "s", Tag: "t", Response: thing{}, Also: []int{304}},
		{Method: "DELETE", Path: "/api/v1/things/{id}", Summary: "s", Tag: "t", Status: 204},
	})
	for _, tc := range []struct {
		pattern string
		status  int
		body    string
		want    string // "" for no error
	}{
		{"GET /api/v1/things/{id}", 200, `{"name":"a","tags":["x"]}`, ""},
		{"GET /api/v1/things/{id}", 200, `{"name":"a","colour":"red"}`, "does not match"},
		{"GET /api/v1/things/{id}", 200, `{"name":1}`, "does not match"},
		{"GET /api/v1/things/{id}", 201, `{"name":"a"}`, "the document lists 200"},
		{"GET /api/v1/things/{id}", 304, ``, ""},
		{"GET /api/v1/things/{id}", 404, `{"error":{"code":"not_found","message":"no thing 7"}}`, ""},
		{"GET /api/v1/things/{id}", 500, `internal error`, "error envelope"},
		{"DELETE /api/v1/things/{id}", 204, ``, ""},
		{"DELETE /api/v1/things/{id}", 204, `{"ok":true}`, "does not describe"},
		{"GET /api/v1/other", 200, `{}`, "not in the API document"},
	} {
		err := c.Check(tc.pattern, tc.status, []byte(tc.body))
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s %d %s: %v, want %q", tc.pattern, tc.status, tc.body, err, tc.want)
		}
	}
}

func TestSpec(t *testing.T) {
	spec, err := apidoc.Spec(apidoc.Info{Title: "x", Version: "1"}, []apidoc.Route{
		{Method: "POST", Path: "/api/v1/things/{id}", Summary: "s", Tag: "t", Body: thing{}, Response: thing{}, Status: 201},
	})
	if err != nil {
		t.Fatal(err)
	}
	schemas := spec["components"].(map[string]any)["schemas"].(map[string]any)
	th, ok := schemas["apidoc_test.thing"].(map[string]any)
	if !ok {
		t.Fatalf("no schema for thing: %v", schemas)
	}
	props := th["properties"].(map[string]any)
	if _, ok := props["name"]; !ok || len(props) != 2 {
		t.Fatalf("thing's properties: %v", props)
	}
	op := spec["paths"].(map[string]any)["/api/v1/things/{id}"].(map[string]any)["post"].(map[string]any)
	if op["operationId"] != "postThingsId" || op["responses"].(map[string]any)["201"] == nil {
		t.Fatalf("operation: %v", op)
	}
	if _, err := apidoc.Spec(apidoc.Info{}, []apidoc.Route{{Method: "GET", Path: "/x"}}); err == nil {
		t.Fatal("a route without a summary was accepted")
	}
}
