"""A Tangram client for Python, standard library only.

It speaks Tangram's HTTP API (docs/openapi.yaml): the config center's client
fetch and long-poll watch, and the service registry's register, heartbeat,
discover and watch. It shows that a team without Go can use both; it is an
example to copy, not a packaged SDK.

    t = Tangram("http://127.0.0.1:8080", token)
    follower = ConfigFollower(t, env="dev", app="demo", namespace="application")
    for items in follower.changes():      # the first value, then each release
        print(items)
"""

import json
import time
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["Tangram", "TangramError", "ConfigFollower", "ServiceFollower"]


class TangramError(Exception):
    """An API error: the HTTP status and the catalogue code (docs/errors.md)."""

    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def _q(s):
    return urllib.parse.quote(s, safe="")


class Tangram:
    """One server's HTTP API, authenticated with an API token."""

    def __init__(self, base_url, token, timeout=10.0):
        self.base = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method, path, body=None, query=None, timeout=None):
        """Sends one request; returns (status, decoded JSON body or None).

        Raises TangramError for an answer in the error envelope."""
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = None
        headers = {"Authorization": "Bearer " + self.token, "Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            if e.code == 304:
                return 304, None
            try:
                err = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                raise TangramError(e.code, "unknown", raw.decode(errors="replace")) from None
            raise TangramError(e.code, err.get("code", "unknown"), err.get("message", "")) from None

    # --- config center ---------------------------------------------------

    def fetch_config(self, env, app, namespace="application", cluster="default",
                     release_key=None, instance=None, labels=None):
        """The values in force for this client, or None when release_key is
        still current (304). The answer's notification_id is the id to watch
        from; items maps keys to values (a yaml/json namespace's document is
        items["content"])."""
        q = {"release_key": release_key, "instance": instance}
        if labels:
            q["labels"] = ",".join(labels)
        status, body = self.request("GET", f"/api/v1/config/configs/{_q(env)}/{_q(app)}/{_q(cluster)}/{_q(namespace)}", query=q)
        return None if status == 304 else body

    def watch_config(self, env, app, ids, cluster="default", timeout="30s"):
        """Long poll: ids maps namespace -> the notification id held (-1 to
        learn the current one). Returns {namespace: new id} for those that
        changed, {} when nothing did within timeout (at most 60s)."""
        body = {"env": env, "app": app, "cluster": cluster,
                "namespaces": [{"ns": ns, "id": i} for ns, i in ids.items()]}
        secs = _seconds(timeout)
        _, out = self.request("POST", "/api/v1/config/watch", body=body, query={"timeout": timeout}, timeout=secs + 10)
        return {c["ns"]: c["id"] for c in (out or {}).get("changes", [])}

    # --- service registry ------------------------------------------------

    def register(self, service, host, port, namespace="public", group="default",
                 weight=100, metadata=None, ephemeral=True):
        """Registers an instance; an ephemeral one must heartbeat (every 5 s
        by default) or it expires."""
        inst = {"namespace": namespace, "group": group, "service": service, "host": host,
                "port": port, "weight": weight, "enabled": True, "ephemeral": ephemeral,
                "metadata": metadata or {}}
        return self.request("POST", "/api/v1/registry/instances", body=inst)[1]

    def _svc(self, namespace, group, service):
        return f"/api/v1/registry/services/{_q(namespace)}/{_q(group)}/{_q(service)}"

    def heartbeat(self, service, instance_id, namespace="public", group="default"):
        self.request("PUT", self._svc(namespace, group, service) + f"/instances/{_q(instance_id)}/heartbeat")

    def deregister(self, service, instance_id, namespace="public", group="default"):
        self.request("DELETE", self._svc(namespace, group, service) + f"/instances/{_q(instance_id)}")

    def service(self, service, namespace="public", group="default"):
        """The service's instances and revision."""
        return self.request("GET", self._svc(namespace, group, service))[1]

    def watch_service(self, service, revision, namespace="public", group="default", timeout="30s"):
        """Long poll: the snapshot once the service changes after revision
        (full=true: instances is the whole list; else events are the
        changes), or as it is after timeout."""
        return self.request("GET", self._svc(namespace, group, service) + "/watch",
                            query={"revision": revision, "timeout": timeout}, timeout=_seconds(timeout) + 10)[1]


def _seconds(d):
    units = {"ms": 0.001, "s": 1, "m": 60}
    for u in ("ms", "s", "m"):
        if d.endswith(u):
            return float(d[: -len(u)]) * units[u]
    raise ValueError(f"duration {d!r}: want e.g. 30s")


class ConfigFollower:
    """Follows one namespace: fetch, then watch and fetch again on change.
    A failed call is retried with a growing pause (up to 30 s); the last
    values stay in force meanwhile."""

    def __init__(self, client, env, app, namespace="application", cluster="default", timeout="30s"):
        self.c, self.env, self.app, self.ns, self.cluster, self.timeout = client, env, app, namespace, cluster, timeout
        self.release_key, self.id, self.items = None, -1, None

    def poll(self):
        """One round: returns the new items if they changed, else None."""
        got = self.c.fetch_config(self.env, self.app, self.ns, self.cluster, release_key=self.release_key)
        if got is not None:
            self.release_key, self.id = got["release_key"], got["notification_id"]
            if got["items"] != self.items:
                self.items = got["items"]
                return self.items
        changed = self.c.watch_config(self.env, self.app, {self.ns: self.id}, self.cluster, self.timeout)
        if self.ns in changed:
            self.id = changed[self.ns]
        return None

    def changes(self, stop=lambda: False):
        pause = 0.5
        while not stop():
            try:
                items = self.poll()
                pause = 0.5
            except (TangramError, OSError) as e:
                if isinstance(e, TangramError) and e.status in (401, 403, 404):
                    raise  # a wrong token or name does not heal by waiting
                time.sleep(pause)
                pause = min(pause * 2, 30)
                continue
            if items is not None:
                yield items


class ServiceFollower:
    """Keeps a service's instance list current through the registry watch."""

    def __init__(self, client, service, namespace="public", group="default", timeout="30s"):
        self.c, self.service, self.ns, self.group, self.timeout = client, service, namespace, group, timeout
        self.revision, self.node, self.instances = 0, None, {}

    def poll(self):
        snap = self.c.watch_service(self.service, self.revision, self.ns, self.group, self.timeout)
        if self.node is not None and snap.get("node") != self.node and not snap.get("full"):
            # Revisions are per server: another server's events do not
            # follow ours. Ask it for the whole list.
            self.node, self.revision = snap.get("node"), 0
            return self.instances
        self.node = snap.get("node")
        if snap.get("full"):
            self.instances = {i["id"]: i for i in snap.get("instances") or []}
        for ev in snap.get("events") or []:
            if ev["type"] == "delete":
                self.instances.pop(ev["instance"]["id"], None)
            else:
                self.instances[ev["instance"]["id"]] = ev["instance"]
        self.revision = snap["revision"]
        return self.instances
