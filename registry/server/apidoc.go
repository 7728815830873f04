package server

import (
	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apidoc"
	"github.com/tangram-dev/tangram/registry"
)

// APIRoutes documents the registry's HTTP API (docs/openapi.yaml).
func APIRoutes() []apidoc.Route {
	const base = "/api/v1/registry"
	const svcPath = base + "/services/{ns}/{group}/{service}"
	t := "registry"
	return []apidoc.Route{
		{Method: "GET", Path: base + "/status", Tag: t, Summary: "This server's registry status (members, counts, self-preservation)", Response: registry.Status{}},
		{Method: "GET", Path: base + "/services", Tag: t, Summary: "List the services the caller may read", Query: []apidoc.Param{apidoc.Q("namespace", "only this namespace")}, Response: api.List[registry.ServiceInfo]{}},
		{Method: "GET", Path: svcPath, Tag: t, Summary: "A service's instances and revision", Response: registry.Snapshot{}},
		{Method: "GET", Path: svcPath + "/watch", Tag: t, Summary: "Long poll: the service's instances once they change after revision, or as they are after timeout; a service nobody registered yet is a valid target",
			Query: []apidoc.Param{{Name: "revision", Type: "integer", Description: "the revision held"}, apidoc.Q("timeout", "a duration up to 60s (default 30s)")}, Response: registry.Snapshot{}},
		{Method: "POST", Path: base + "/instances", Tag: t, Summary: "Register an instance (ephemeral ones must heartbeat)", Body: registry.Instance{}, Response: registry.Instance{}},
		{Method: "PUT", Path: svcPath + "/instances/{id}/heartbeat", Tag: t, Summary: "Renew an ephemeral instance", Status: 204},
		{Method: "DELETE", Path: svcPath + "/instances/{id}", Tag: t, Summary: "Deregister an instance", Status: 204},
		{Method: "PATCH", Path: svcPath + "/instances/{id}", Tag: t, Summary: "Change an instance's weight, enabled flag or metadata (releaser)", Body: registry.Patch{}, Response: registry.Instance{}},
	}
}
