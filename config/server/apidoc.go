package server

import (
	"github.com/tangram-dev/tangram/config"
	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apidoc"
)

// WatchAnswer is the body of a config watch's answer.
type WatchAnswer struct {
	Changes []config.Notification `json:"changes"`
}

// APIRoutes documents the config center's HTTP API (docs/openapi.yaml).
func APIRoutes() []apidoc.Route {
	const base = "/api/v1/config"
	const nsPath = base + "/envs/{env}/apps/{app}/clusters/{cluster}/namespaces/{ns}"
	t := "config"
	source := apidoc.Q("source", `"draft" reads the draft instead of the current release`)
	return []apidoc.Route{
		{Method: "GET", Path: base + "/envs", Tag: t, Summary: "List environments", Response: api.List[config.Env]{}},
		{Method: "POST", Path: base + "/envs", Tag: t, Summary: "Create an environment (admin)", Body: config.Env{}, Status: 201, Response: config.Env{}, Also: []int{409}},
		{Method: "PUT", Path: base + "/envs/{env}", Tag: t, Summary: "Change an environment (admin)", Body: config.Env{}, Response: config.Env{}},
		{Method: "GET", Path: base + "/apps", Tag: t, Summary: "List the apps the caller may read", Response: api.List[config.App]{}},
		{Method: "POST", Path: base + "/apps", Tag: t, Summary: "Create an app (with cluster default and namespace application in every environment)", Body: config.App{}, Status: 201, Response: config.App{}, Also: []int{409}},
		{Method: "GET", Path: base + "/apps/{app}", Tag: t, Summary: "Get an app", Response: config.App{}},
		{Method: "GET", Path: base + "/envs/{env}/apps/{app}/clusters", Tag: t, Summary: "List an app's clusters in an environment", Response: api.List[string]{}},
		{Method: "POST", Path: base + "/envs/{env}/apps/{app}/clusters", Tag: t, Summary: "Create a cluster", Body: struct {
			Name string `json:"name"`
		}{}, Status: 201, Response: map[string]string{}, Also: []int{409}},
		{Method: "GET", Path: base + "/envs/{env}/apps/{app}/clusters/{cluster}/namespaces", Tag: t, Summary: "List a cluster's namespaces", Response: api.List[config.Namespace]{}},
		{Method: "POST", Path: base + "/envs/{env}/apps/{app}/clusters/{cluster}/namespaces", Tag: t, Summary: "Create a namespace, or link a public one", Body: config.NamespaceSpec{}, Status: 201, Response: config.Namespace{}, Also: []int{409}},
		{Method: "GET", Path: nsPath, Tag: t, Summary: "Get a namespace with its draft items (secrets masked) and pending request", Response: config.NamespaceView{}},
		{Method: "PATCH", Path: nsPath, Tag: t, Summary: "Change a namespace's release rules (admin)", Body: config.Settings{}, Response: config.Namespace{}},
		{Method: "GET", Path: nsPath + "/items/{key}", Tag: t, Summary: "Get one item of the current release (or the draft); the same shape PUT takes", Query: []apidoc.Param{source}, Response: config.Item{}},
		{Method: "PUT", Path: nsPath + "/items/{key}", Tag: t, Summary: "Set one draft item (version: fail on a concurrent edit)", Body: config.ItemEdit{}, Response: config.DraftVersion{}, Also: []int{409}},
		{Method: "DELETE", Path: nsPath + "/items/{key}", Tag: t, Summary: "Delete one draft item", Query: []apidoc.Param{{Name: "version", Type: "integer", Description: "fail unless the draft is at this version"}}, Response: config.DraftVersion{}, Also: []int{409}},
		{Method: "POST", Path: nsPath + "/draft", Tag: t, Summary: "Edit the draft: set is a list of {key,value,secret,comment}, delete a list of keys, replace drops the rest", Body: config.Edit{}, Response: config.DraftVersion{}, Also: []int{409}},
		{Method: "POST", Path: nsPath + "/publish", Tag: t, Summary: "Publish the draft as a release", Body: config.PublishRequest{}, Status: 201, Response: config.Release{}, Also: []int{409}},
		{Method: "GET", Path: nsPath + "/releases", Tag: t, Summary: "List releases, newest first", Query: []apidoc.Param{{Name: "limit", Type: "integer"}, {Name: "cursor", Type: "string"}}, Response: api.List[config.Release]{}},
		{Method: "GET", Path: nsPath + "/releases/{id}", Tag: t, Summary: "Get a release", Response: config.Release{}},
		{Method: "GET", Path: nsPath + "/diff", Tag: t, Summary: "Diff two releases or the draft (from, to: release id, current or draft)", Query: []apidoc.Param{apidoc.Q("from", "release id, current or draft"), apidoc.Q("to", "release id, current or draft")}, Response: api.List[config.Change]{}},
		{Method: "POST", Path: nsPath + "/rollback", Tag: t, Summary: "Roll back to an earlier release (as a new release)", Body: config.RollbackRequest{}, Status: 201, Response: config.Release{}, Also: []int{409}},
		{Method: "GET", Path: nsPath + "/gray", Tag: t, Summary: "Get the gray branch", Response: config.Gray{}},
		{Method: "POST", Path: nsPath + "/gray", Tag: t, Summary: "Edit the gray branch (items and rules)", Body: config.GrayEdit{}, Response: config.Gray{}, Also: []int{409}},
		{Method: "POST", Path: nsPath + "/gray/publish", Tag: t, Summary: "Publish the gray branch to the clients its rules match", Body: config.PublishRequest{}, Status: 201, Response: config.Release{}, Also: []int{409}},
		{Method: "POST", Path: nsPath + "/gray/promote", Tag: t, Summary: "Promote the gray branch into a full release", Body: config.PublishRequest{}, Status: 201, Response: config.Release{}, Also: []int{409}},
		{Method: "POST", Path: nsPath + "/gray/abandon", Tag: t, Summary: "Abandon the gray branch", Status: 204},
		{Method: "GET", Path: nsPath + "/requests", Tag: t, Summary: "List publish requests", Response: api.List[config.ReleaseRequest]{}},
		{Method: "POST", Path: nsPath + "/requests", Tag: t, Summary: "Open a publish request for the draft", Body: struct {
			Comment string `json:"comment"`
		}{}, Status: 201, Response: config.ReleaseRequest{}, Also: []int{409}},
		{Method: "POST", Path: nsPath + "/requests/{id}/{decision}", Tag: t, Summary: "Approve (publishes; 201 with the release), reject or cancel (204) a publish request", Body: config.Decision{}, Status: 201, Response: config.Release{}, Also: []int{204, 409}},
		{Method: "GET", Path: nsPath + "/instances", Tag: t, Summary: "List the client instances that fetched the namespace and the release each holds", Response: api.List[config.Instance]{}},
		{Method: "GET", Path: nsPath + "/export", Tag: t, Summary: "Export as a file (secrets masked unless reveal=true, which needs the secrets permission)", Query: []apidoc.Param{apidoc.Q("format", "properties, yaml or json"), source, {Name: "reveal", Type: "boolean", Description: "secrets in plaintext (secrets permission)"}}, Text: true},
		{Method: "POST", Path: nsPath + "/import", Tag: t, Summary: "Import a file into the draft: JSON {format, data, merge}; a masked secret keeps its stored value", Body: config.ImportRequest{}, Response: config.DraftVersion{}},
		{Method: "GET", Path: base + "/configs/{env}/{app}/{cluster}/{ns}", Tag: t, Summary: "Client fetch: the values in force for this client; notification_id is the id to watch from; secrets in clear only with the secrets permission",
			Query:    []apidoc.Param{apidoc.Q("instance", "the client instance's id"), apidoc.Q("ip", "the client's address (default: the caller's)"), apidoc.Q("labels", "comma-separated labels for gray rules, e.g. canary,zone-a"), apidoc.Q("release_key", "the release_key held: 304 when it is still current")},
			Response: config.Payload{}, Also: []int{304}},
		{Method: "POST", Path: base + "/watch", Tag: t, Summary: "Long poll: answers with the namespaces whose notification id differs from the one sent (-1 learns the current one), or none after timeout; 404 for a namespace that does not exist",
			Query: []apidoc.Param{apidoc.Q("timeout", "a duration up to 60s (default 30s)")}, Body: config.WatchRequest{}, Response: WatchAnswer{}},
	}
}
