package registry

// Patch is an operator's change to an instance; nil fields stay.
type Patch struct {
	Weight   *int              `json:"weight,omitempty"`
	Enabled  *bool             `json:"enabled,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"` // replaces the metadata when set
}

// ServiceInfo summarizes a service.
type ServiceInfo struct {
	Key
	Instances int   `json:"instances"`
	Healthy   int   `json:"healthy"`
	Revision  int64 `json:"revision"`
}

// Status is the registry's health as operators see it.
type Status struct {
	Node             string `json:"node"`
	Services         int    `json:"services"`
	Instances        int    `json:"instances"`
	Ephemeral        int    `json:"ephemeral"`
	SelfPreservation bool   `json:"self_preservation"`
	// Renewals in the last window, and the number expected from the
	// ephemeral instances this server owns.
	Renewals         int64 `json:"renewals"`
	ExpectedRenewals int64 `json:"expected_renewals"`
	Watchers         int64 `json:"watchers"`
	// Members are the servers of the replication cluster this one sees.
	Members []string `json:"members"`
}

// HeartbeatRequest renews several instances of one client at once.
type HeartbeatRequest struct {
	Key Key      `msgpack:"key"`
	IDs []string `msgpack:"ids"`
}

// HeartbeatReply lists the instances the server does not know (the client
// registers them again).
type HeartbeatReply struct {
	Unknown []string `msgpack:"unknown,omitempty"`
}

// InstanceRef names one instance.
type InstanceRef struct {
	Key Key    `msgpack:"key"`
	ID  string `msgpack:"id"`
}

// WatchRequest opens a watch stream on a service from a revision (0: start
// with the full list).
type WatchRequest struct {
	Key      Key   `msgpack:"key"`
	Revision int64 `msgpack:"revision"`
	// Node is the server Revision came from; on another server the watch
	// starts with the full list.
	Node string `msgpack:"node"`
}

// Empty is an empty message.
type Empty struct{}

// Probe kinds, chosen by the instance's "probe" metadata: "tcp" (default:
// connect), "http:/path" (GET, healthy on 2xx/3xx), "rpc" (a Tangram RPC
// ping frame answered by a pong).
const MetaProbe = "probe"
