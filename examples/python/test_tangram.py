"""Tests of tangram.py against a real server: TANGRAM_URL and TANGRAM_TOKEN
name it (the Go test beside this file starts one and runs these)."""

import os
import threading
import time
import unittest
import uuid

from tangram import ConfigFollower, ServiceFollower, Tangram, TangramError

URL, TOKEN = os.environ.get("TANGRAM_URL"), os.environ.get("TANGRAM_TOKEN")


@unittest.skipUnless(URL and TOKEN, "TANGRAM_URL and TANGRAM_TOKEN name the server under test")
class ConfigCenter(unittest.TestCase):
    def setUp(self):
        self.t = Tangram(URL, TOKEN)
        self.app = "py-" + uuid.uuid4().hex[:8]
        self.t.request("POST", "/api/v1/config/apps", {"name": self.app})
        self.ns = f"/api/v1/config/envs/dev/apps/{self.app}/clusters/default/namespaces/application"

    def publish(self, key, value):
        self.t.request("PUT", self.ns + "/items/" + key, {"value": value})
        self.t.request("POST", self.ns + "/publish", {"comment": "from python"})

    def test_fetch_watch_follow(self):
        self.publish("greeting", "hello")
        got = self.t.fetch_config("dev", self.app)
        self.assertEqual(got["items"], {"greeting": "hello"})
        self.assertIsNone(self.t.fetch_config("dev", self.app, release_key=got["release_key"]), "304 when current")
        # The follower sees the first value, then a release made while it
        # is watching, within a couple of seconds of the publish.
        f = ConfigFollower(self.t, "dev", self.app, timeout="10s")
        stream = f.changes()
        self.assertEqual(next(stream), {"greeting": "hello"})
        published = {}

        def later():
            time.sleep(0.3)  # let the follower's watch be held
            published["at"] = time.monotonic()
            self.publish("greeting", "bonjour")

        th = threading.Thread(target=later)
        th.start()
        self.assertEqual(next(stream), {"greeting": "bonjour"})
        seen = time.monotonic()
        th.join()
        self.assertLess(seen - published["at"], 5.0)

    def test_watch_unknown_namespace_is_404(self):
        with self.assertRaises(TangramError) as cm:
            self.t.watch_config("dev", self.app, {"applicaton": -1}, timeout="1s")
        self.assertEqual((cm.exception.status, cm.exception.code), (404, "not_found"))

    def test_watch_timeout_rule(self):
        with self.assertRaises(TangramError) as cm:
            self.t.request("POST", "/api/v1/config/watch", {"env": "dev", "app": self.app, "namespaces": [{"ns": "application", "id": 0}]},
                           query={"timeout": "10m"})
        self.assertEqual(cm.exception.status, 400)

    def test_errors_come_in_the_envelope(self):
        with self.assertRaises(TangramError) as cm:
            Tangram(URL, "tgm_wrong").fetch_config("dev", self.app)
        self.assertEqual((cm.exception.status, cm.exception.code), (401, "unauthorized"))
        with self.assertRaises(TangramError) as cm:
            self.t.request("POST", "/api/v1/config/apps", None)
        self.assertEqual(cm.exception.code, "bad_request")


@unittest.skipUnless(URL and TOKEN, "TANGRAM_URL and TANGRAM_TOKEN name the server under test")
class Registry(unittest.TestCase):
    def test_register_discover_watch(self):
        t = Tangram(URL, TOKEN)
        svc = "py-svc-" + uuid.uuid4().hex[:6]
        f = ServiceFollower(t, svc, timeout="10s")
        self.assertEqual(f.poll(), {}, "a service nobody registered yet is watchable")
        inst = t.register(svc, "10.1.2.3", 8080, metadata={"lang": "python"})
        self.assertEqual(inst["id"], "10.1.2.3:8080")
        t.heartbeat(svc, inst["id"])
        deadline = time.monotonic() + 10
        while "10.1.2.3:8080" not in f.instances and time.monotonic() < deadline:
            f.poll()
        self.assertEqual(f.instances["10.1.2.3:8080"]["metadata"], {"lang": "python"})
        self.assertEqual([i["id"] for i in t.service(svc)["instances"]], ["10.1.2.3:8080"])
        t.deregister(svc, inst["id"])
        deadline = time.monotonic() + 10
        while f.instances and time.monotonic() < deadline:
            f.poll()
        self.assertEqual(f.instances, {})


if __name__ == "__main__":
    unittest.main()
