"""Checks the Kubernetes API stand-in (server.py) over plain HTTP.

Run: tests/ec2sim/.venv/bin/python -m pytest -q tests/k8sapi
"""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SERVER = HERE / "server.py"
FIXTURES = HERE / "fixtures"
NODE = "ip-192-168-1-10.ec2.internal"
VA = "csi-e804ba85482fd4b14d5db9c36837eef3c814f225495e8e3f98e08796a41984b3"
NODE_PATH = f"/api/v1/nodes/{NODE}"
USER = "system:serviceaccount:kube-system:ebs-csi-node-sa"


def fixture(name):
    return json.loads((FIXTURES / name).read_text())


def read_ready(proc, timeout=10.0):
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no ready line"
    line = proc.stdout.readline()
    assert line.endswith(b"\n")
    return json.loads(line)


class Fake:
    """One running server.py."""

    def __init__(self, *args, popen_args=None):
        self.log = tempfile.TemporaryFile()
        cmd = popen_args or [sys.executable, str(SERVER), "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log)
        self.ready = read_ready(self.proc)
        self.endpoint = self.ready["endpoint"]
        self.host, port = self.endpoint.removeprefix("http://").split(":")
        self.port = int(port)

    def request(self, method, path, body=None, ctype=None, headers=None):
        data = None
        hdrs = dict(headers or {})
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs["Content-Type"] = ctype or "application/json"
        req = urllib.request.Request(self.endpoint + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def api(self, method, path, body=None, ctype=None, headers=None):
        code, hdrs, raw = self.request(method, path, body, ctype, headers)
        ct = hdrs.get("Content-Type", "")
        return code, (json.loads(raw) if ct.startswith("application/json") else raw.decode())

    def control(self, method, path, body=None):
        code, obj = self.api(method, "/_fake/" + path, body)
        assert code < 300, (code, obj)
        return obj

    def config(self, **kw):
        return self.control("POST", "config", kw)

    def node(self):
        code, obj = self.api("GET", NODE_PATH)
        assert code == 200
        return obj

    def open_watch(self, path, timeout=10):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Type") == "application/json"
        assert resp.getheader("Transfer-Encoding") == "chunked"
        return conn, resp

    def stderr(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


def next_event(resp):
    line = resp.readline()
    assert line, "stream ended"
    assert line.endswith(b"\n")
    return json.loads(line)


def rest_of_stream(resp):
    out = []
    for line in iter(resp.readline, b""):
        out.append(json.loads(line))
    return out


@pytest.fixture(scope="module")
def server():
    fake = Fake("--bookmark-interval", "0.2")
    yield fake
    fake.stop()


@pytest.fixture()
def fake(server):
    server.control("POST", "reset")
    server.control("POST", "objects", [fixture("node.json"), fixture("csinode.json"),
                                      fixture("volumeattachment.json")])
    server.control("POST", "requests/reset")
    return server


# -- process contract --------------------------------------------------------


def test_ready_line_and_sigterm():
    f = Fake()
    try:
        assert set(f.ready) == {"endpoint", "pid"}
        assert f.ready["pid"] == f.proc.pid
        assert f.endpoint.startswith("http://127.0.0.1:") and f.port > 0
    finally:
        f.proc.send_signal(signal.SIGTERM)
        assert f.proc.wait(5) == 0
        assert f.proc.stdout.read() == b""  # exactly one line was printed
        f.stop()


def test_sigint_exits_cleanly_even_with_an_open_watch():
    f = Fake()
    try:
        _, resp = f.open_watch("/api/v1/nodes?watch=true&timeoutSeconds=60")
        f.proc.send_signal(signal.SIGINT)
        assert f.proc.wait(5) == 0
        assert rest_of_stream(resp) == []  # the stream was closed properly
        assert "Traceback" not in f.stderr()
    finally:
        f.stop()


def test_exits_when_parent_dies():
    launcher = ("import subprocess, sys\n"
                f"p = subprocess.Popen([sys.executable, {str(SERVER)!r}, '--port', '0'])\n"
                "p.wait()\n")
    parent = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    try:
        ready = read_ready(parent)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(5)
        # the server holds the pipe's write end: EOF means it exited
        r, _, _ = select.select([parent.stdout], [], [], 5)
        assert r and parent.stdout.read() == b""
        with pytest.raises(OSError):
            urllib.request.urlopen(ready["endpoint"] + "/version", timeout=2)
    finally:
        parent.stdout.close()


def test_load_flag_and_info():
    f = Fake("--load", str(FIXTURES / "node.json"))
    try:
        assert f.node()["metadata"]["name"] == NODE
        info = f.control("GET", "info")
        assert info["endpoint"] == f.endpoint and info["pid"] == f.proc.pid
    finally:
        f.stop()


# -- discovery, get, list ----------------------------------------------------


def test_discovery(fake):
    code, v = fake.api("GET", "/version")
    assert code == 200 and v["major"] == "1" and v["gitVersion"].startswith("v1.")
    assert fake.api("GET", "/api")[1]["versions"] == ["v1"]
    groups = fake.api("GET", "/apis")[1]
    assert groups["kind"] == "APIGroupList"
    assert groups["groups"][0]["preferredVersion"]["groupVersion"] == "storage.k8s.io/v1"
    core = fake.api("GET", "/api/v1")[1]
    assert [r["name"] for r in core["resources"]] == ["nodes"]
    storage = fake.api("GET", "/apis/storage.k8s.io/v1")[1]
    assert {r["kind"] for r in storage["resources"]} == {"CSINode", "VolumeAttachment"}
    assert fake.api("GET", "/healthz") == (200, "ok")


def test_get_node_shape(fake):
    code, hdrs, raw = fake.request("GET", NODE_PATH)
    assert code == 200 and hdrs["Content-Type"] == "application/json"
    assert raw.endswith(b"}\n") and b": " not in raw[:40]  # compact Go-style JSON
    node = json.loads(raw)
    assert list(node)[:3] == ["kind", "apiVersion", "metadata"]
    assert node["kind"] == "Node" and node["apiVersion"] == "v1"
    meta = node["metadata"]
    for key in ("name", "uid", "resourceVersion", "creationTimestamp"):
        assert meta[key]
    assert meta["resourceVersion"].isdigit()
    assert node["spec"]["providerID"] == "aws:///us-east-1a/i-0123456789abcdef0"
    assert meta["labels"]["node.kubernetes.io/instance-type"] == "m5.large"
    assert {"key": "ebs.csi.aws.com/agent-not-ready", "effect": "NoExecute"} in node["spec"]["taints"]


def test_not_found_body_is_exact(fake):
    code, st = fake.api("GET", "/api/v1/nodes/x")
    assert code == 404
    assert st == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": "nodes \"x\" not found", "reason": "NotFound",
                  "details": {"name": "x", "kind": "nodes"}, "code": 404}
    code, st = fake.api("GET", "/apis/storage.k8s.io/v1/csinodes/x")
    assert code == 404 and st["message"] == 'csinodes.storage.k8s.io "x" not found'
    assert st["details"] == {"name": "x", "group": "storage.k8s.io", "kind": "csinodes"}


def test_unknown_paths(fake):
    code, body = fake.api("GET", "/nope")
    assert code == 404 and body == "404 page not found\n"
    code, st = fake.api("GET", "/api/v1/pods")
    assert code == 404 and st["message"] == "the server could not find the requested resource"


def test_list_and_selectors(fake):
    extra = fixture("node.json")
    extra["metadata"] = {"name": "ip-192-168-1-11.ec2.internal",
                         "labels": {"topology.kubernetes.io/zone": "us-east-1b",
                                    "node.kubernetes.io/instance-type": "m5.xlarge"}}
    fake.control("POST", "objects", extra)
    code, lst = fake.api("GET", "/api/v1/nodes")
    assert code == 200 and lst["kind"] == "NodeList" and lst["apiVersion"] == "v1"
    assert lst["metadata"]["resourceVersion"].isdigit()
    assert [i["metadata"]["name"] for i in lst["items"]] == [NODE, "ip-192-168-1-11.ec2.internal"]
    assert all("kind" not in i and "apiVersion" not in i for i in lst["items"])

    def names(query):
        code, lst = fake.api("GET", "/api/v1/nodes?" + query)
        assert code == 200, lst
        return [i["metadata"]["name"] for i in lst["items"]]

    assert names(f"fieldSelector=metadata.name%3D{NODE}") == [NODE]
    assert names(f"fieldSelector=metadata.name!%3D{NODE}") == ["ip-192-168-1-11.ec2.internal"]
    assert names("fieldSelector=spec.unschedulable%3Dfalse") == [NODE, "ip-192-168-1-11.ec2.internal"]
    assert names("labelSelector=topology.kubernetes.io/zone%3Dus-east-1a") == [NODE]
    assert names("labelSelector=node.kubernetes.io/instance-type%3D%3Dm5.xlarge") == [
        "ip-192-168-1-11.ec2.internal"]
    assert names("labelSelector=topology.kubernetes.io/zone!%3Dus-east-1a") == [
        "ip-192-168-1-11.ec2.internal"]
    assert names("labelSelector=topology.kubernetes.io/zone%20in%20(us-east-1b,us-east-1c)") == [
        "ip-192-168-1-11.ec2.internal"]
    assert names("labelSelector=eks.amazonaws.com/nodegroup") == [NODE]
    assert names("labelSelector=!eks.amazonaws.com/nodegroup") == ["ip-192-168-1-11.ec2.internal"]
    # kube-rs's leading '&'
    assert names(f"&fieldSelector=metadata.name%3D{NODE}&labelSelector=kubernetes.io/os%3Dlinux") == [NODE]


def test_unsupported_field_selectors_are_400(fake):
    code, st = fake.api("GET", "/apis/storage.k8s.io/v1/volumeattachments?fieldSelector=spec.nodeName%3Dx")
    assert code == 400
    assert st == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": "\"spec.nodeName\" is not a known field selector: only "
                             "\"metadata.name\", \"metadata.namespace\"",
                  "reason": "BadRequest", "code": 400}
    code, st = fake.api("GET", "/api/v1/nodes?fieldSelector=spec.providerID%3Dx")
    assert code == 400 and st["message"] == "field label not supported: spec.providerID"
    code, st = fake.api("GET", "/api/v1/nodes?watch=true&fieldSelector=status.phase%3Dx")
    assert code == 400 and st["reason"] == "BadRequest"


def test_list_paging(fake):
    for i in range(5):
        va = fixture("volumeattachment.json")
        va["metadata"] = {"name": f"csi-{i:064x}"}
        fake.control("POST", "objects", va)
    base = "/apis/storage.k8s.io/v1/volumeattachments"
    code, page = fake.api("GET", base + "?&limit=4")
    assert code == 200 and page["kind"] == "VolumeAttachmentList"
    assert len(page["items"]) == 4 and page["metadata"]["remainingItemCount"] == 2
    token = page["metadata"]["continue"]
    code, page2 = fake.api("GET", base + "?limit=4&continue=" + token)
    assert code == 200 and len(page2["items"]) == 2 and "continue" not in page2["metadata"]
    assert page2["metadata"]["resourceVersion"] == page["metadata"]["resourceVersion"]
    names = [i["metadata"]["name"] for i in page["items"] + page2["items"]]
    assert names == sorted(names) and len(set(names)) == 6


def test_list_options_validation(fake):
    code, st = fake.api("GET", "/api/v1/nodes?resourceVersionMatch=NotOlderThan")
    assert code == 422 and st["reason"] == "Invalid"
    assert st["message"] == ('ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: '
                             'Forbidden: resourceVersionMatch is forbidden unless resourceVersion '
                             'is provided')
    assert st["details"]["causes"][0]["field"] == "resourceVersionMatch"
    code, st = fake.api("GET", "/api/v1/nodes?watch=true&sendInitialEvents=true")
    assert code == 422 and "sendInitialEvents requires setting resourceVersionMatch" in st["message"]


# -- writes ------------------------------------------------------------------


def taint_patch(old, new):
    return [{"op": "test", "path": "/spec/taints", "value": old},
            {"op": "replace", "path": "/spec/taints", "value": new}]


def test_json_patch_test_and_replace(fake):
    node = fake.node()
    old = node["spec"]["taints"]
    new = [t for t in old if t["key"] != "ebs.csi.aws.com/agent-not-ready"]
    code, out = fake.api("PATCH", NODE_PATH, taint_patch(old, new), "application/json-patch+json")
    assert code == 200, out
    assert out["kind"] == "Node" and out["spec"]["taints"] == new
    assert int(out["metadata"]["resourceVersion"]) > int(node["metadata"]["resourceVersion"])
    assert out["metadata"]["uid"] == node["metadata"]["uid"]
    assert fake.node() == out

    # the same patch again: its test now fails -> 422 exactly as the real server words it
    code, st = fake.api("PATCH", NODE_PATH, taint_patch(old, new), "application/json-patch+json")
    assert code == 422
    assert st == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": "the server rejected our request due to an error in our request",
                  "reason": "Invalid", "details": {}, "code": 422}
    assert fake.node() == out  # nothing was written


def test_json_patch_operations(fake):
    ops = [
        {"op": "add", "path": "/spec/taints/-", "value": {"key": "a", "effect": "NoSchedule"}},
        {"op": "add", "path": "/metadata/labels/example.com~1role", "value": "x"},
        {"op": "remove", "path": "/metadata/annotations/node.alpha.kubernetes.io~1ttl"},
        {"op": "replace", "path": "/spec/taints/0/effect", "value": "NoSchedule"},
        {"op": "copy", "from": "/metadata/labels/example.com~1role", "path": "/metadata/labels/b"},
        {"op": "move", "from": "/metadata/labels/b", "path": "/metadata/labels/c"},
        {"op": "test", "path": "/metadata/labels/c", "value": "x"},
    ]
    code, out = fake.api("PATCH", NODE_PATH, ops, "application/json-patch+json")
    assert code == 200, out
    assert out["spec"]["taints"][-1] == {"key": "a", "effect": "NoSchedule"}
    assert out["spec"]["taints"][0]["effect"] == "NoSchedule"
    assert out["metadata"]["labels"]["example.com/role"] == "x"
    assert out["metadata"]["labels"]["c"] == "x" and "b" not in out["metadata"]["labels"]
    assert "node.alpha.kubernetes.io/ttl" not in out["metadata"]["annotations"]
    before = fake.node()
    for bad in ([{"op": "remove", "path": "/spec/nothing"}],
                [{"op": "replace", "path": "/metadata/labels/missing", "value": "1"}],
                [{"op": "test", "path": "/spec/taints/0/key", "value": 1}],
                [{"op": "frobnicate", "path": "/spec"}]):
        code, st = fake.api("PATCH", NODE_PATH, bad, "application/json-patch+json")
        assert code == 422 and st["reason"] == "Invalid", bad
    code, st = fake.api("PATCH", NODE_PATH, {"op": "test"}, "application/json-patch+json")
    assert code == 400 and st["reason"] == "BadRequest"
    assert fake.node() == before


def test_removing_last_taint_drops_the_field(fake):
    old = fake.node()["spec"]["taints"]
    code, out = fake.api("PATCH", NODE_PATH, taint_patch(old, []), "application/json-patch+json")
    assert code == 200 and "taints" not in out["spec"]
    # so a test against [] now fails, as it would on the real server
    code, _ = fake.api("PATCH", NODE_PATH, taint_patch([], []), "application/json-patch+json")
    assert code == 422


def test_merge_and_strategic_patches(fake):
    code, out = fake.api("PATCH", NODE_PATH, {"metadata": {"labels": {"new": "1", "kubernetes.io/os": None}}},
                         "application/merge-patch+json")
    assert code == 200 and out["metadata"]["labels"]["new"] == "1"
    assert "kubernetes.io/os" not in out["metadata"]["labels"]
    smp = {"spec": {"taints": [{"key": "only", "effect": "NoSchedule"}]},
           "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    code, out = fake.api("PATCH", NODE_PATH, smp, "application/strategic-merge-patch+json")
    assert code == 200
    assert out["spec"]["taints"] == [{"key": "only", "effect": "NoSchedule"}]  # no merge key: replaced
    conds = {c["type"]: c for c in out["status"]["conditions"]}
    assert len(conds) == 4 and conds["Ready"]["status"] == "False"  # merged by type
    assert conds["Ready"]["reason"] == "KubeletReady"
    code, out = fake.api("PATCH", NODE_PATH, {"status": {"conditions": [
        {"type": "PIDPressure", "$patch": "delete"}]}}, "application/strategic-merge-patch+json")
    assert code == 200 and len(out["status"]["conditions"]) == 3
    code, st = fake.api("PATCH", NODE_PATH, {}, "application/json")
    assert code == 415 and st["reason"] == "UnsupportedMediaType"


def test_noop_patch_is_not_a_write(fake):
    rv = fake.node()["metadata"]["resourceVersion"]
    code, out = fake.api("PATCH", NODE_PATH, {"metadata": {"labels": {"kubernetes.io/os": "linux"}}},
                         "application/merge-patch+json")
    assert code == 200 and out["metadata"]["resourceVersion"] == rv


def test_conflict_body_is_exact(fake):
    code, st = fake.api("PATCH", NODE_PATH, {"metadata": {"resourceVersion": "1"}, "spec": {"unschedulable": True}},
                        "application/merge-patch+json")
    assert code == 409
    assert st == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": f"Operation cannot be fulfilled on nodes \"{NODE}\": the object has "
                             "been modified; please apply your changes to the latest version and "
                             "try again",
                  "reason": "Conflict", "details": {"name": NODE, "kind": "nodes"}, "code": 409}
    node = fake.node()
    code, out = fake.api("PATCH", NODE_PATH, {"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                                              "spec": {"unschedulable": True}}, "application/merge-patch+json")
    assert code == 200 and out["spec"]["unschedulable"] is True


def test_forbidden_body_is_exact(fake):
    fake.config(forbidden=[{"verb": "patch", "resource": "nodes"}, {"verb": "list", "resource": "volumeattachments"}])
    code, st = fake.api("PATCH", "/api/v1/nodes/x", {}, "application/merge-patch+json")
    assert code == 403
    assert st == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": f"nodes \"x\" is forbidden: User \"{USER}\" cannot patch resource "
                             "\"nodes\" in API group \"\" at the cluster scope",
                  "reason": "Forbidden", "details": {"name": "x", "kind": "nodes"}, "code": 403}
    assert fake.api("GET", NODE_PATH)[0] == 200  # get is still allowed
    code, st = fake.api("GET", "/apis/storage.k8s.io/v1/volumeattachments")
    assert code == 403
    assert st["message"] == (f"volumeattachments.storage.k8s.io is forbidden: User \"{USER}\" cannot "
                             "list resource \"volumeattachments\" in API group \"storage.k8s.io\" "
                             "at the cluster scope")
    assert st["details"] == {"group": "storage.k8s.io", "kind": "volumeattachments"}


def test_conflict_next_patches_makes_a_stale_test_fail_then_retry_succeeds(fake):
    fake.config(conflict_next_patches=1)
    conn, resp = fake.open_watch(f"/api/v1/nodes?watch=true&fieldSelector=metadata.name%3D{NODE}"
                                 f"&resourceVersion={fake.node()['metadata']['resourceVersion']}&timeoutSeconds=10")
    stale = fake.node()
    old = stale["spec"]["taints"]
    new = [t for t in old if t["key"] != "ebs.csi.aws.com/agent-not-ready"]
    code, st = fake.api("PATCH", NODE_PATH, taint_patch(old, new), "application/json-patch+json")
    assert code == 422 and st["message"] == "the server rejected our request due to an error in our request"
    ev = next_event(resp)  # the concurrent writer's change
    assert ev["type"] == "MODIFIED"
    fresh = fake.node()
    assert ev["object"] == fresh
    assert int(fresh["metadata"]["resourceVersion"]) > int(stale["metadata"]["resourceVersion"])
    assert any(t["key"] == "fake.k8s.io/concurrent-writer" for t in fresh["spec"]["taints"])
    assert fake.control("GET", "config")["conflict_next_patches"] == 0
    # retry with the fresh Node
    old = fresh["spec"]["taints"]
    new = [t for t in old if t["key"] != "ebs.csi.aws.com/agent-not-ready"]
    code, out = fake.api("PATCH", NODE_PATH, taint_patch(old, new), "application/json-patch+json")
    assert code == 200 and out["spec"]["taints"] == new
    ev = next_event(resp)
    assert ev["type"] == "MODIFIED" and ev["object"] == out
    conn.close()


def test_put_post_delete(fake):
    node = fake.node()
    node["metadata"]["labels"]["put"] = "yes"
    code, out = fake.api("PUT", NODE_PATH, node)
    assert code == 200 and out["metadata"]["labels"]["put"] == "yes"
    code, st = fake.api("PUT", NODE_PATH, node)  # stale resourceVersion now
    assert code == 409 and st["reason"] == "Conflict"
    va = fixture("volumeattachment.json")
    code, st = fake.api("POST", "/apis/storage.k8s.io/v1/volumeattachments", va)
    assert code == 400 and "resourceVersion should not be set" in st["message"]
    del va["metadata"]["resourceVersion"]
    code, st = fake.api("POST", "/apis/storage.k8s.io/v1/volumeattachments", va)
    assert code == 409 and st["reason"] == "AlreadyExists"
    assert st["message"] == f'volumeattachments.storage.k8s.io "{VA}" already exists'
    code, out = fake.api("DELETE", f"/apis/storage.k8s.io/v1/volumeattachments/{VA}")
    assert code == 200 and out["metadata"]["name"] == VA
    code, out = fake.api("POST", "/apis/storage.k8s.io/v1/volumeattachments", va)
    assert code == 201 and out["metadata"]["uid"] != va["metadata"]["uid"]
    assert fake.api("DELETE", "/apis/storage.k8s.io/v1/volumeattachments/none")[0] == 404


# -- control API -------------------------------------------------------------


def test_requests_are_recorded(fake):
    fake.api("GET", NODE_PATH)
    fake.api("PATCH", NODE_PATH, [{"op": "test", "path": "/kind", "value": "Node"}],
             "application/json-patch+json")
    fake.request("GET", "/api/v1/nodes?&watch=true&timeoutSeconds=1&allowWatchBookmarks=true"
                        "&resourceVersion=0")
    got = fake.control("GET", "requests")
    assert got["count"] == 3  # control requests are not recorded
    get, patch, watch = got["requests"]
    assert get["method"] == "GET" and get["path"] == NODE_PATH and get["status"] == 200
    assert patch["content_type"] == "application/json-patch+json"
    assert patch["body"] == [{"op": "test", "path": "/kind", "value": "Node"}]
    assert watch["query"] == "&watch=true&timeoutSeconds=1&allowWatchBookmarks=true&resourceVersion=0"
    assert watch["params"] == {"watch": "true", "timeoutSeconds": "1", "allowWatchBookmarks": "true",
                               "resourceVersion": "0"}
    only = fake.control("GET", "requests?method=PATCH")
    assert only["count"] == 1
    fake.control("POST", "requests/reset")
    assert fake.control("GET", "requests")["count"] == 0


def test_delay_ms(fake):
    fake.config(delay_ms=300)
    t0 = time.monotonic()
    assert fake.api("GET", NODE_PATH)[0] == 200
    assert time.monotonic() - t0 >= 0.3
    fake.config(delay_ms=0)


def test_fail_next(fake):
    fake.config(fail_next=[{"verb": "get", "resource": "nodes", "code": 500, "count": 2}])
    for _ in range(2):
        code, st = fake.api("GET", NODE_PATH)
        assert code == 500 and st["reason"] == "InternalError"
    assert fake.api("GET", NODE_PATH)[0] == 200
    assert fake.control("GET", "config")["fail_next"] == []


def test_config_rejects_unknown_keys(fake):
    code, body = fake.api("POST", "/_fake/config", {"confict_next_patches": 1})
    assert code == 400 and "unknown config keys" in body["error"]


def test_control_objects(fake):
    objs = fake.control("GET", "objects")
    assert [o["metadata"]["name"] for o in objs["nodes"]] == [NODE]
    assert fake.control("GET", f"objects/volumeattachments/{VA}")["spec"]["attacher"] == "ebs.csi.aws.com"
    code, _ = fake.api("DELETE", "/_fake/objects/nodes/none")
    assert code == 404
    code, body = fake.api("POST", "/_fake/objects", {"kind": "Pod", "metadata": {"name": "p"}})
    assert code == 400 and "unknown kind" in body["error"]
    cfg = fake.control("GET", "kubeconfig")
    assert cfg["clusters"][0]["cluster"]["server"] == fake.endpoint


def test_csinode_fixtures(fake):
    code, cn = fake.api("GET", f"/apis/storage.k8s.io/v1/csinodes/{NODE}")
    assert code == 200 and cn["kind"] == "CSINode"
    assert cn["spec"]["drivers"][0]["name"] == "ebs.csi.aws.com"
    assert cn["spec"]["drivers"][0]["allocatable"]["count"] > 0
    fake.control("POST", "objects", fixture("csinode-no-drivers.json"))
    code, cn = fake.api("GET", f"/apis/storage.k8s.io/v1/csinodes/{NODE}")
    assert cn["spec"] == {"drivers": None}  # what the real server writes for no drivers


# -- watch -------------------------------------------------------------------


def test_watch_added_modified_deleted_bookmark(fake):
    rv = fake.api("GET", "/apis/storage.k8s.io/v1/volumeattachments")[1]["metadata"]["resourceVersion"]
    conn, resp = fake.open_watch("/apis/storage.k8s.io/v1/volumeattachments?&watch=true&timeoutSeconds=2"
                                 f"&allowWatchBookmarks=true&resourceVersion={rv}")
    assert fake.control("GET", "watches")["count"] == 1
    va = fixture("volumeattachment.json")
    va["metadata"] = {"name": "csi-" + "1" * 64}
    created = fake.control("POST", "objects", va)
    ev = next_event(resp)
    assert ev == {"type": "ADDED", "object": created}
    assert ev["object"]["kind"] == "VolumeAttachment" and ev["object"]["apiVersion"] == "storage.k8s.io/v1"
    code, out = fake.api("PATCH", f"/apis/storage.k8s.io/v1/volumeattachments/{va['metadata']['name']}",
                         {"status": {"attached": False}}, "application/merge-patch+json")
    assert code == 200
    ev = next_event(resp)
    assert ev == {"type": "MODIFIED", "object": out}
    gone = fake.control("DELETE", f"objects/volumeattachments/{va['metadata']['name']}")
    ev = next_event(resp)
    assert ev["type"] == "DELETED" and ev["object"] == gone
    assert int(gone["metadata"]["resourceVersion"]) > int(out["metadata"]["resourceVersion"])
    bm = next_event(resp)
    assert bm == {"type": "BOOKMARK", "object": {"kind": "VolumeAttachment", "apiVersion": "storage.k8s.io/v1",
                                                 "metadata": {"resourceVersion": gone["metadata"]["resourceVersion"]}}}
    t0 = time.monotonic()
    rest = rest_of_stream(resp)  # ends after timeoutSeconds
    assert time.monotonic() - t0 < 3
    assert rest and all(e["type"] == "BOOKMARK" for e in rest)
    conn.close()


def test_watch_replays_events_after_resource_version(fake):
    rv = fake.node()["metadata"]["resourceVersion"]
    fake.api("PATCH", NODE_PATH, {"metadata": {"labels": {"a": "1"}}}, "application/merge-patch+json")
    fake.api("PATCH", NODE_PATH, {"metadata": {"labels": {"a": "2"}}}, "application/merge-patch+json")
    conn, resp = fake.open_watch(f"/api/v1/nodes?watch=1&resourceVersion={rv}&timeoutSeconds=1")
    events = rest_of_stream(resp)
    assert [e["type"] for e in events] == ["MODIFIED", "MODIFIED"]
    assert [e["object"]["metadata"]["labels"]["a"] for e in events] == ["1", "2"]
    conn.close()


def test_watch_without_resource_version_starts_with_added(fake):
    conn, resp = fake.open_watch("/api/v1/nodes?watch=true&timeoutSeconds=1")
    events = rest_of_stream(resp)
    assert [e["type"] for e in events] == ["ADDED"]
    assert events[0]["object"] == fake.node()
    conn.close()


def test_watch_stale_resource_version_gets_410(fake):
    old = fake.node()["metadata"]["resourceVersion"]
    fake.api("PATCH", NODE_PATH, {"metadata": {"labels": {"a": "1"}}}, "application/merge-patch+json")
    compacted = fake.control("POST", "compact")
    conn, resp = fake.open_watch(f"/api/v1/nodes?watch=true&resourceVersion={old}&timeoutSeconds=5")
    events = rest_of_stream(resp)
    assert events == [{"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"too old resource version: {old} ({compacted['compactedTo']})",
        "reason": "Expired", "code": 410}}]
    conn.close()
    # a watch from the current resourceVersion is fine
    conn, resp = fake.open_watch(f"/api/v1/nodes?watch=true&resourceVersion={compacted['resourceVersion']}"
                                 "&timeoutSeconds=1")
    assert rest_of_stream(resp) == []
    conn.close()


def test_watch_streaming_list_as_kube_rs_sends_it(fake):
    path = ("/apis/storage.k8s.io/v1/csinodes?&watch=true&timeoutSeconds=1&allowWatchBookmarks=true"
            "&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=0")
    conn, resp = fake.open_watch(path)
    first, end = next_event(resp), next_event(resp)
    assert first["type"] == "ADDED" and first["object"]["metadata"]["name"] == NODE
    assert end["type"] == "BOOKMARK"
    assert end["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert end["object"]["metadata"]["resourceVersion"] == fake.control("GET", "info")["resourceVersion"]
    rest_of_stream(resp)
    conn.close()


def test_watch_selector_transitions(fake):
    conn, resp = fake.open_watch("/api/v1/nodes?watch=true&labelSelector=drain%3Dyes&resourceVersion="
                                 + fake.node()["metadata"]["resourceVersion"] + "&timeoutSeconds=5")
    fake.api("PATCH", NODE_PATH, {"metadata": {"labels": {"drain": "yes"}}}, "application/merge-patch+json")
    assert next_event(resp)["type"] == "ADDED"
    fake.api("PATCH", NODE_PATH, {"spec": {"unschedulable": True}}, "application/merge-patch+json")
    assert next_event(resp)["type"] == "MODIFIED"
    fake.api("PATCH", NODE_PATH, {"metadata": {"labels": {"drain": None}}}, "application/merge-patch+json")
    ev = next_event(resp)
    assert ev["type"] == "DELETED" and ev["object"]["metadata"]["labels"]["drain"] == "yes"
    conn.close()


def test_watch_named_object_and_keep_alive(fake):
    conn = http.client.HTTPConnection(fake.host, fake.port, timeout=10)
    conn.request("GET", f"{NODE_PATH}?watch=true&timeoutSeconds=1")
    resp = conn.getresponse()
    events = rest_of_stream(resp)
    assert [e["type"] for e in events] == ["ADDED"]
    # the connection is reusable after the stream ended, as hyper expects
    conn.request("GET", NODE_PATH)
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["metadata"]["name"] == NODE
    conn.close()


def test_watch_client_disconnect_is_noticed(fake):
    conn, resp = fake.open_watch("/api/v1/nodes?watch=true&timeoutSeconds=60")
    assert fake.control("GET", "watches")["count"] == 1
    conn.close()
    resp.close()
    deadline = time.monotonic() + 3
    while fake.control("GET", "watches")["count"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.control("GET", "watches")["count"] == 0


def test_forbidden_watch(fake):
    fake.config(forbidden=[{"verb": "watch", "resource": "volumeattachments"}])
    code, st = fake.api("GET", "/apis/storage.k8s.io/v1/volumeattachments?watch=true")
    assert code == 403 and "cannot watch resource" in st["message"]
