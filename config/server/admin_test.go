package server_test

import (
	"context"
	"errors"
	"testing"

	"github.com/tangram-dev/tangram/config"
	configserver "github.com/tangram-dev/tangram/config/server"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/server/servertest"
)

// TestAdminClient drives a whole release cycle through the typed client
// against a real server, and checks that the API's errors match the
// package's sentinels on the client side.
func TestAdminClient(t *testing.T) {
	h := servertest.Start(t)
	ctx := context.Background()
	a := config.NewAdmin(h.URL, h.Token)
	if _, err := a.CreateApp(ctx, config.App{Name: "shop"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateApp(ctx, config.App{Name: "shop"}); !errors.Is(err, config.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	co := config.Coord{Env: "dev", App: "shop", Cluster: config.DefaultCluster, NS: config.DefaultNamespace}
	v, err := a.SetItem(ctx, co, "greeting", config.ItemEdit{Value: "hello"})
	if err != nil || v == 0 {
		t.Fatalf("SetItem = %d, %v", v, err)
	}
	stale := v - 1
	if _, err := a.SetItem(ctx, co, "greeting", config.ItemEdit{Value: "x", Version: &stale}); !errors.Is(err, config.ErrConflict) {
		t.Fatalf("stale SetItem: %v, want ErrConflict", err)
	}
	view, err := a.Namespace(ctx, co)
	if err != nil || len(view.Pending) != 1 || view.Namespace.DraftVersion != v {
		t.Fatalf("Namespace = %+v, %v", view, err)
	}
	rel, err := a.Publish(ctx, co, config.PublishRequest{Comment: "first"})
	if err != nil || rel.Version != 1 {
		t.Fatalf("Publish = %+v, %v", rel, err)
	}
	it, err := a.Item(ctx, co, "greeting", false)
	if err != nil || it.Value != "hello" {
		t.Fatalf("Item = %+v, %v", it, err)
	}
	if _, err := a.Item(ctx, co, "nope", false); !errors.Is(err, config.ErrNotFound) {
		t.Fatalf("missing item: %v, want ErrNotFound", err)
	}
	if _, err := a.DeleteItem(ctx, co, "greeting"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Publish(ctx, co, config.PublishRequest{Comment: "second"}); err != nil {
		t.Fatal(err)
	}
	back, err := a.Rollback(ctx, co, config.RollbackRequest{})
	if err != nil {
		t.Fatal(err)
	}
	served, err := a.Served(ctx, co)
	if err != nil || served.Items["greeting"] != "hello" {
		t.Fatalf("after rollback %+v: served %+v, %v", back, served, err)
	}
	rels, err := a.Releases(ctx, co, 10)
	if err != nil || len(rels) != 3 {
		t.Fatalf("Releases = %d, %v", len(rels), err)
	}
	out, err := a.Export(ctx, co, config.ExportOptions{})
	if err != nil || out != "greeting = hello\n" {
		t.Fatalf("Export = %q, %v", out, err)
	}
	if _, err := a.Import(ctx, co, config.ImportRequest{Data: "a=1\nb=2\n", Merge: true}); err != nil {
		t.Fatal(err)
	}
	diff, err := a.Diff(ctx, co, "current", "draft")
	if err != nil || len(diff) != 2 {
		t.Fatalf("Diff = %+v, %v", diff, err)
	}
	if _, err := config.NewAdmin(h.URL, "tgm_wrong").Apps(ctx); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("wrong token: %v, want ErrUnauthenticated", err)
	}
}

// TestEveryOpHasARule: an operation added without a permission is refused,
// never allowed by default.
func TestEveryOpHasARule(t *testing.T) {
	ctx := auth.WithPrincipal(context.Background(), &auth.Principal{Name: "root", Bindings: []auth.Binding{{Role: auth.Admin, Env: "*", App: "*", NS: "*"}}})
	for _, op := range []configserver.Op{configserver.OpRead, configserver.OpManageEnvs, configserver.OpCreateApp, configserver.OpCreateCluster,
		configserver.OpCreateNS, configserver.OpEditDraft, configserver.OpReveal, configserver.OpSettings, configserver.OpPublish, configserver.OpRollback,
		configserver.OpEditGray, configserver.OpReleaseGray, configserver.OpRequest, configserver.OpReview, configserver.OpCancelRequest} {
		if err := configserver.Authorize(ctx, op, config.Coord{Env: "dev", App: "a", NS: "n"}); err != nil {
			t.Errorf("admin refused %s: %v", op, err)
		}
	}
	if err := configserver.Authorize(ctx, "no-such-op", config.Coord{}); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("unknown op: %v", err)
	}
	viewer := auth.WithPrincipal(context.Background(), &auth.Principal{Name: "v", Bindings: []auth.Binding{{Role: auth.Viewer, Env: "*", App: "a", NS: "*"}}})
	if configserver.Allowed(viewer, configserver.OpCancelRequest, config.Coord{Env: "dev", App: "a", NS: "n"}) {
		t.Fatal("a viewer may cancel a publish request")
	}
	if !configserver.Allowed(viewer, configserver.OpRead, config.Coord{Env: "dev", App: "a", NS: "n"}) {
		t.Fatal("a viewer may not read")
	}
}
