package server

import (
	"context"

	"github.com/tangram-dev/tangram/config"
	"github.com/tangram-dev/tangram/internal/auth"
)

// Op is an operation on the config center. The permission each needs is
// decided here and only here: the HTTP API and the console both call
// Authorize, so they cannot drift apart.
type Op string

// The operations.
const (
	OpRead          Op = "read"           // list and read envs, apps, clusters, namespaces, releases, diffs, gray, requests, instances; fetch and watch as a client
	OpManageEnvs    Op = "manage-envs"    // create and change environments
	OpCreateApp     Op = "create-app"     // create an app
	OpCreateCluster Op = "create-cluster" // create a cluster of an app
	OpCreateNS      Op = "create-ns"      // create or link a namespace
	OpEditDraft     Op = "edit-draft"     // set, delete, import into a draft
	OpReveal        Op = "reveal"         // export secrets in plaintext
	OpSecrets       Op = "secrets"        // receive secret values in clear when fetching as a client
	OpSettings      Op = "settings"       // a namespace's release rules
	OpPublish       Op = "publish"        // publish a draft
	OpRollback      Op = "rollback"       // roll back to an earlier release
	OpEditGray      Op = "edit-gray"      // change a gray overlay and its rules
	OpReleaseGray   Op = "release-gray"   // publish, promote or abandon a gray release
	OpRequest       Op = "request"        // open a publish request
	OpReview        Op = "review"         // approve or reject a publish request
	OpCancelRequest Op = "cancel-request" // withdraw a publish request
)

var opPerm = map[Op]auth.Perm{
	OpRead:          auth.PermRead,
	OpManageEnvs:    auth.PermAdmin,
	OpCreateApp:     auth.PermEdit,
	OpCreateCluster: auth.PermEdit,
	OpCreateNS:      auth.PermEdit,
	OpEditDraft:     auth.PermEdit,
	OpReveal:        auth.PermSecrets,
	OpSecrets:       auth.PermSecrets,
	OpSettings:      auth.PermAdmin,
	OpPublish:       auth.PermRelease,
	OpRollback:      auth.PermRelease,
	OpEditGray:      auth.PermEdit,
	OpReleaseGray:   auth.PermRelease,
	OpRequest:       auth.PermEdit,
	OpReview:        auth.PermRelease,
	OpCancelRequest: auth.PermEdit,
}

// Authorize checks that the caller in ctx may do op on c (empty fields
// of c: the whole environment, app or platform).
func Authorize(ctx context.Context, op Op, c config.Coord) error {
	p, ok := opPerm[op]
	if !ok {
		return auth.ErrForbidden // an operation without a rule is refused
	}
	return auth.Check(ctx, p, c.Env, c.App, c.NS)
}

// Allowed reports whether the caller in ctx may do op on c, for showing
// or hiding a control.
func Allowed(ctx context.Context, op Op, c config.Coord) bool {
	return Authorize(ctx, op, c) == nil
}

// VisibleApps keeps the apps the caller in ctx may read.
func VisibleApps(ctx context.Context, apps []config.App) []config.App {
	out := make([]config.App, 0, len(apps))
	for _, a := range apps {
		if Allowed(ctx, OpRead, config.Coord{App: a.Name}) {
			out = append(out, a)
		}
	}
	return out
}
