package errcode_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/tangram-dev/tangram/internal/errcode"
)

var errGone = errcode.New(errcode.NotFound, "thing: not found")

func TestOfFindsTheSentinelThroughWrapping(t *testing.T) {
	err := fmt.Errorf("load: %w", fmt.Errorf("%w: app %q", errGone, "shop"))
	code, ok := errcode.Of(err)
	if !ok || code != errcode.NotFound {
		t.Fatalf("Of = %q, %v; want not_found", code, ok)
	}
	if _, ok := errcode.Of(errors.New("plain")); ok {
		t.Fatal("a plain error has a code")
	}
}

func TestMessageTrimsTheSentinelsWords(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("load: %w", fmt.Errorf("%w: app %q", errGone, "shop")), `load: app "shop"`},
		{fmt.Errorf("%w queue 3", errcode.New(errcode.BadRequest, "mq/wire: invalid")), "queue 3"},
		{errGone, "thing: not found"},
		{errors.New("plain"), "plain"},
	} {
		if got := errcode.Message(c.err); got != c.want {
			t.Errorf("Message(%q) = %q, want %q", c.err, got, c.want)
		}
	}
}

func TestLookupAndReverse(t *testing.T) {
	seenHTTP := map[int]errcode.Code{}
	for _, r := range errcode.Catalogue() {
		if r.HTTP < 400 || r.HTTP > 599 {
			t.Errorf("%s: HTTP %d is not an error status", r.Code, r.HTTP)
		}
		if got := errcode.Lookup(r.Code); got != r {
			t.Errorf("Lookup(%s) = %+v, want %+v", r.Code, got, r)
		}
		if _, dup := seenHTTP[r.HTTP]; !dup {
			seenHTTP[r.HTTP] = r.Code
			if got := errcode.FromHTTP(r.HTTP); got != r.Code {
				t.Errorf("FromHTTP(%d) = %s, want %s (the first code with that status)", r.HTTP, got, r.Code)
			}
		}
	}
	if got := errcode.Lookup("no_such_code"); got.HTTP != 500 || got.Code != "no_such_code" {
		t.Errorf("unknown code: %+v", got)
	}
	if errcode.FromRPC(5) != errcode.NotFound || errcode.FromRPC(999) != errcode.Internal {
		t.Error("FromRPC")
	}
	if !errcode.Matches(errcode.NotFound, errGone) || errcode.Matches(errcode.Conflict, errGone) || errcode.Matches(errcode.NotFound, errors.New("x")) {
		t.Error("Matches")
	}
}

// TestCatalogueIsDocumented keeps docs/errors.md and the catalogue one list:
// a non-Go client relies on the page.
func TestCatalogueIsDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/errors.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, r := range errcode.Catalogue() {
		row := fmt.Sprintf("| `%s` | %d |", r.Code, r.HTTP)
		if !strings.Contains(doc, row) {
			t.Errorf("docs/errors.md has no row starting %q", row)
		}
	}
}
