#!/usr/bin/env python3
"""A stand-in for the Kubernetes API server, used by the driver's tests.

Why it exists: no Kubernetes API server can run on the machines these tests
run on (there is no etcd, no kube-apiserver binary and no container runtime).
The Rust integration tests therefore start this small HTTP/1.1 server, stdlib
only, and point the driver's kube-rs client at it. It is not Kubernetes. It
keeps three cluster-scoped resources in memory and answers for them in the
real server's wire format, so code tested against it should work unchanged
against a real cluster.

Behaviours of the real kube-apiserver it reproduces (the source each one was
checked against is in brackets):

* Paths and shapes. Serves core/v1 ``nodes`` and storage.k8s.io/v1
  ``csinodes`` and ``volumeattachments``: get, list, watch (``?watch=1|true``,
  a watch on a named object, and the legacy ``/watch/`` prefix), PATCH, PUT,
  POST and DELETE. Objects carry apiVersion/kind/metadata (name, uid,
  resourceVersion, creationTimestamp). Lists are ``NodeList`` etc. with
  ``metadata.resourceVersion`` (plus ``continue``/``remainingItemCount`` when
  paged with ``limit``), and their items have no apiVersion/kind, as the real
  server writes them. JSON is compact and ends in a newline, like Go's
  encoder. [Kubernetes API reference; using-api/api-concepts]
* One resourceVersion counter for the whole cluster. Every write raises it
  and emits a watch event. A write that changes nothing is not a write: it
  gets no new resourceVersion and no event (etcd3 GuaranteedUpdate). Stored
  objects lose their empty omitempty fields, as Go serialisation drops them
  (``spec.taints: []`` disappears, and so does a taint's empty ``value``).
* Selectors. ``labelSelector`` (=, ==, !=, in, notin, exists, !exists, >, <)
  and ``fieldSelector`` (=, ==, !=) use each kind's real field labels. Node
  knows ``metadata.name`` and ``spec.unschedulable``; any other field gets 400
  ``field label not supported: X``. CSINode and VolumeAttachment know only
  ``metadata.name`` and ``metadata.namespace``, so ``spec.nodeName`` gets 400
  ``"spec.nodeName" is not a known field selector: only "metadata.name",
  "metadata.namespace"``. [kubernetes pkg/apis/core/v1/conversion.go;
  apimachinery pkg/runtime/conversion.go DefaultMetaV1FieldSelectorConversion;
  apiserver endpoints/handlers/get.go, which wraps both as errors.NewBadRequest]
* PATCH takes four content types:
  - ``application/json-patch+json`` (RFC 6902: add, remove, replace, move,
    copy, test).
  - ``application/merge-patch+json`` (RFC 7386).
  - ``application/strategic-merge-patch+json``: merge semantics plus the
    merge keys of the few lists that have one, such as status.conditions by
    ``type``. ``spec.taints`` has no patch strategy, so the whole list is
    replaced, as on the real server.
  - ``application/apply-patch+yaml``: JSON bodies only, merge approximation.

  When a JSON patch does not apply (a failed ``test`` op, a missing path, an
  unknown op) the answer is **422**, reason ``Invalid``, message "the server
  rejected our request due to an error in our request", ``details: {}``.
  apiserver's endpoints/handlers/patch.go (jsonPatcher.applyJSPatch) returns
  ``errors.NewGenericServerResponse(http.StatusUnprocessableEntity, "",
  schema.GroupResource{}, "", err.Error(), 0, false)``. Because
  isUnexpectedResponse is false, that function (apimachinery
  pkg/api/errors/errors.go) drops the json-patch error text and leaves the
  details empty. A malformed patch document gets 400 BadRequest.
  If the patched object carries a resourceVersion other than the current one
  the answer is 409 Conflict: ``Operation cannot be fulfilled on nodes "x":
  the object has been modified; please apply your changes to the latest
  version and try again`` (errors.NewConflict + storage OptimisticLockErrorMsg).
* Watch. The answer is a chunked ``application/json`` stream of
  newline-separated ``{"type": "ADDED|MODIFIED|DELETED|BOOKMARK|ERROR",
  "object": ...}``.
  - ``resourceVersion=N`` replays the events after N.
  - With resourceVersion unset or "0" the stream starts with synthetic ADDED
    events for the objects as they are now.
  - ``sendInitialEvents=true`` with ``resourceVersionMatch=NotOlderThan`` (what
    kube-rs's streaming-list watcher sends) closes those initial events with a
    BOOKMARK annotated ``k8s.io/initial-events-end: "true"``, when
    allowWatchBookmarks is set.
  - ``allowWatchBookmarks=true`` adds periodic BOOKMARKs that carry only
    apiVersion, kind and metadata.resourceVersion.
  - An object entering or leaving the selector shows up as ADDED or DELETED
    (cacheWatcher).
  - A resourceVersion older than the kept history gets one ERROR event holding
    a 410 ``Expired`` Status, ``too old resource version: N (M)``
    (cacher/watch_cache.go).
  - The stream ends after ``timeoutSeconds``.
  - Invalid combinations, such as resourceVersionMatch without
    sendInitialEvents, get 422 Invalid ListOptions
    (apimachinery pkg/apis/meta/internalversion/validation).
* Errors are Status objects with the real messages: 404 NotFound, 409
  Conflict and AlreadyExists, 422 Invalid, 403 Forbidden worded as the RBAC
  authorizer words it, 405, 415 and 400.
* Discovery and health: /version, /api, /apis, /api/v1, /apis/storage.k8s.io
  and /apis/storage.k8s.io/v1 give minimal answers; /healthz, /livez and
  /readyz answer too.

What it does not model:
* authentication, namespaces and other resources, admission, validation of
  object contents, defaulting, managedFields;
* real server-side-apply field ownership, deletecollection, and subresources
  such as /status;
* encodings other than JSON, and Table output;
* consistent pages and resourceVersionMatch=Exact against history: lists
  always come from the current state;
* the "too large resource version" wait, and HTTP/2.

Tests steer it through the control API under ``/_fake/`` (JSON). Control
requests are not recorded. README.md describes the control API.

Usage: ``python3 tests/k8sapi/server.py [--port 0] [--load FILE]...``. Once it
listens on 127.0.0.1 it prints exactly one JSON line on stdout,
``{"endpoint": "http://127.0.0.1:PORT", "pid": N}``, and logs on stderr. It
exits 0 on SIGTERM or SIGINT, or when its parent process goes away (checked
every 0.5 s).
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import logging
import os
import re
import select
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("k8sapi")

DEFAULT_USER = "system:serviceaccount:kube-system:ebs-csi-node-sa"
OPTIMISTIC_LOCK = ("the object has been modified; please apply your changes "
                   "to the latest version and try again")
PATCH_NOT_APPLIED = "the server rejected our request due to an error in our request"
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
START_RV = 1000

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH)

VERSION_INFO = {
    "major": "1",
    "minor": "32+",
    "gitVersion": "v1.32.5-eks-5d4a308",
    "gitCommit": "5d4a3080db8a7e3e8e2a2b0f8b4f5c2a1d9e7b36",
    "gitTreeState": "clean",
    "buildDate": "2025-05-20T18:42:29Z",
    "goVersion": "go1.23.8",
    "compiler": "gc",
    "platform": "linux/amd64",
}

DEFAULT_CONFIG = {
    # [{"verb": "patch", "resource": "nodes", "name": optional}] -> 403
    "forbidden": [],
    # next N PATCHes of nodes meet a concurrent writer first
    "conflict_next_patches": 0,
    # the taint that writer adds (default: fake.k8s.io/concurrent-writer=<n>:NoSchedule)
    "conflict_taint": None,
    # seconds between periodic BOOKMARKs (<= 0: none)
    "bookmark_interval": 1.0,
    # delay before answering each API request
    "delay_ms": 0,
    # who the 403 messages name
    "user": DEFAULT_USER,
    # [{"verb", "resource", "name"?, "code", "count"?, "message"?, "drop"?}]
    "fail_next": [],
    # watch length when timeoutSeconds is absent or 0
    "default_watch_timeout": 1800,
    # watch events kept for resuming; older resourceVersions get 410
    "history_limit": 10000,
}

PRIMITIVE = "<primitive>"  # strategic-merge list of scalars (merged as a set)


# --------------------------------------------------------------------------
# resources


def _go_quote(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


class Resource:
    def __init__(self, plural, singular, kind, group, version, short_names,
                 field_labels, smp_keys, field_error):
        self.plural = plural
        self.singular = singular
        self.kind = kind
        self.group = group
        self.version = version
        self.short_names = short_names
        self.field_labels = field_labels
        self.smp_keys = smp_keys
        self.field_error = field_error
        self.api_version = f"{group}/{version}" if group else version
        self.prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
        self.list_kind = kind + "List"
        # schema.GroupResource.String()
        self.qualified = f"{plural}.{group}" if group else plural

    def field_value(self, obj, label):
        meta = obj.get("metadata") or {}
        if label == "metadata.name":
            return meta.get("name", "")
        if label == "metadata.namespace":
            return meta.get("namespace", "")
        if label == "spec.unschedulable":
            return "true" if (obj.get("spec") or {}).get("unschedulable") else "false"
        return ""

    def discovery(self):
        entry = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": False,
            "kind": self.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list",
                      "patch", "update", "watch"],
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        return entry


def _node_field_error(label):
    # pkg/apis/core/v1/conversion.go, AddFieldLabelConversionFunc for Node
    return f"field label not supported: {label}"


def _default_field_error(label):
    # apimachinery pkg/runtime/conversion.go DefaultMetaV1FieldSelectorConversion
    return (f"{_go_quote(label)} is not a known field selector: only "
            f"\"metadata.name\", \"metadata.namespace\"")


_COMMON_SMP = {("metadata", "finalizers"): PRIMITIVE,
               ("metadata", "ownerReferences"): "uid"}

RESOURCES = {
    r.plural: r for r in (
        Resource("nodes", "node", "Node", "", "v1", ["no"],
                 ("metadata.name", "spec.unschedulable"),
                 {**_COMMON_SMP, ("spec", "podCIDRs"): PRIMITIVE,
                  ("status", "conditions"): "type", ("status", "addresses"): "type"},
                 _node_field_error),
        Resource("csinodes", "csinode", "CSINode", "storage.k8s.io", "v1", [],
                 ("metadata.name", "metadata.namespace"),
                 {**_COMMON_SMP, ("spec", "drivers"): "name"},
                 _default_field_error),
        Resource("volumeattachments", "volumeattachment", "VolumeAttachment",
                 "storage.k8s.io", "v1", [],
                 ("metadata.name", "metadata.namespace"),
                 dict(_COMMON_SMP), _default_field_error),
    )
}
BY_PATH = {(r.group, r.plural): r for r in RESOURCES.values()}
BY_KIND = {r.kind: r for r in RESOURCES.values()}


# --------------------------------------------------------------------------
# Status objects (apimachinery pkg/api/errors)


def details(name="", group="", kind="", causes=None, retry=0):
    d = {}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    if kind:
        d["kind"] = kind
    if causes:
        d["causes"] = causes
    if retry:
        d["retryAfterSeconds"] = retry
    return d


def status(code, reason, message, det=None):
    st = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
    if message:
        st["message"] = message
    if reason:
        st["reason"] = reason
    if det is not None:
        st["details"] = det
    st["code"] = code
    return st


def st_not_found(res, name):
    return status(404, "NotFound", f"{res.qualified} {_go_quote(name)} not found",
                  details(name, res.group, res.plural))


def st_route_not_found():
    return status(404, "NotFound", "the server could not find the requested resource", {})


def st_conflict(res, name, why=OPTIMISTIC_LOCK):
    return status(409, "Conflict",
                  f"Operation cannot be fulfilled on {res.qualified} {_go_quote(name)}: {why}",
                  details(name, res.group, res.plural))


def st_already_exists(res, name):
    return status(409, "AlreadyExists", f"{res.qualified} {_go_quote(name)} already exists",
                  details(name, res.group, res.plural))


def st_patch_not_applied():
    return status(422, "Invalid", PATCH_NOT_APPLIED, {})


def st_bad_request(message):
    return status(400, "BadRequest", message)


def st_forbidden(res, verb, name, user):
    why = (f"User {_go_quote(user)} cannot {verb} resource {_go_quote(res.plural)} "
           f"in API group {_go_quote(res.group)} at the cluster scope")
    if name:
        msg = f"{res.qualified} {_go_quote(name)} is forbidden: {why}"
    else:
        msg = f"{res.qualified} is forbidden: {why}"
    return status(403, "Forbidden", msg, details(name, res.group, res.plural))


def st_expired(message):
    return status(410, "Expired", message)


def st_method_not_allowed():
    return status(405, "MethodNotAllowed",
                  "the server does not allow this method on the requested resource", {})


def st_unsupported_media_type():
    return status(415, "UnsupportedMediaType",
                  "the body of the request was in an unknown format - accepted media types "
                  "include: " + ", ".join(PATCH_TYPES))


def st_invalid(group, kind, name, errs):
    """errors.NewInvalid; errs are (field, cause type, error body)."""
    full = [f"{f}: {b}" for f, _, b in errs]
    agg = full[0] if len(full) == 1 else "[" + ", ".join(full) + "]"
    qk = f"{kind}.{group}" if group else kind
    causes = [{"reason": t, "message": b, "field": f} for f, t, b in errs]
    return status(422, "Invalid", f"{qk} {_go_quote(name)} is invalid: {agg}",
                  details(name, group, kind, causes))


def st_for_code(code, res, name, verb, message, user):
    """Status for an injected failure, as the real server words that code."""
    if code == 400:
        return st_bad_request(message or "the server rejected our request for an unknown reason")
    if code == 403:
        return st_forbidden(res, verb, name, user)
    if code == 404:
        return st_not_found(res, name) if name else st_route_not_found()
    if code == 409:
        return st_conflict(res, name)
    if code == 410:
        return st_expired(message or "too old resource version")
    if code == 422:
        return st_patch_not_applied() if not message else status(422, "Invalid", message, {})
    if code == 429:
        return status(429, "TooManyRequests",
                      message or "Too many requests, please try again later.",
                      details(retry=1))
    if code == 500:
        why = message or "injected fault"
        return status(500, "InternalError", f"Internal error occurred: {why}",
                      details(causes=[{"message": why}]))
    if code == 503:
        return status(503, "ServiceUnavailable",
                      message or "the server is currently unable to handle the request")
    if code == 504:
        return status(504, "Timeout", message or
                      "Timeout: request did not complete within requested timeout - "
                      "context deadline exceeded")
    return status(code, "", message or
                  f"the server responded with the status code {code} but did not return "
                  "more information")


# --------------------------------------------------------------------------
# JSON helpers


def now_rfc3339():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def dumps(obj) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def json_equal(a, b) -> bool:
    """JSON value equality (true is not 1; 1 equals 1.0)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _empty(v) -> bool:
    return v is None or v is False or (isinstance(v, (str, list, dict)) and len(v) == 0)


_META_ORDER = ("name", "generateName", "namespace", "uid", "resourceVersion", "generation",
               "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
               "labels", "annotations", "ownerReferences", "finalizers", "managedFields")


def canonicalize(res, obj):
    """Key order of Go structs and the omitempty fields Go would not write."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for k in list(meta):
            if k != "creationTimestamp" and _empty(meta[k]):
                del meta[k]
        ordered = {k: meta[k] for k in _META_ORDER if k in meta}
        ordered.update((k, v) for k, v in meta.items() if k not in ordered)
        obj["metadata"] = ordered
    if res.plural == "nodes" and isinstance(obj.get("spec"), dict):
        spec = obj["spec"]
        taints = spec.get("taints")
        if isinstance(taints, list):
            for t in taints:
                if isinstance(t, dict):
                    if t.get("value") in ("", None):
                        t.pop("value", None)
                    if t.get("timeAdded", "") is None:
                        t.pop("timeAdded", None)
        for k in ("podCIDR", "podCIDRs", "providerID", "unschedulable", "taints",
                  "configSource", "externalID"):
            if k in spec and _empty(spec[k]):
                del spec[k]
    out = {}
    for k in ("kind", "apiVersion", "metadata"):
        if k in obj:
            out[k] = obj[k]
    out.update((k, v) for k, v in obj.items() if k not in out)
    return out


def strip_type(obj):
    """List items carry no apiVersion/kind on the real server."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


# --------------------------------------------------------------------------
# patches


class PatchDecodeError(Exception):
    """The patch document is malformed: 400 BadRequest."""


class PatchApplyError(Exception):
    """The patch does not apply to the object: 422 (json patch)."""


def _pointer(path):
    if not isinstance(path, str):
        raise PatchApplyError("path is not a string")
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchApplyError(f"invalid JSON pointer: {path}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _index(token, length, allow_end):
    if token == "-" and allow_end:
        return length
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchApplyError(f"invalid array index: {token}")
    i = int(token)
    if i > length or (i == length and not allow_end):
        raise PatchApplyError(f"array index out of bounds: {i}")
    return i


def _parent(doc, tokens):
    cur = doc
    for t in tokens:
        if isinstance(cur, dict):
            if t not in cur:
                raise PatchApplyError("doc is missing path")
            cur = cur[t]
        elif isinstance(cur, list):
            cur = cur[_index(t, len(cur), False)]
        else:
            raise PatchApplyError("doc is missing path")
    return cur


def _get(doc, tokens):
    if not tokens:
        return doc
    parent, key = _parent(doc, tokens[:-1]), tokens[-1]
    if isinstance(parent, dict):
        if key not in parent:
            raise PatchApplyError("doc is missing path")
        return parent[key]
    if isinstance(parent, list):
        return parent[_index(key, len(parent), False)]
    raise PatchApplyError("doc is missing path")


def _add(doc, tokens, value):
    if not tokens:
        return value
    parent, key = _parent(doc, tokens[:-1]), tokens[-1]
    if isinstance(parent, dict):
        parent[key] = value
    elif isinstance(parent, list):
        parent.insert(_index(key, len(parent), True), value)
    else:
        raise PatchApplyError("add operation does not apply: doc is missing path")
    return doc


def _remove(doc, tokens):
    if not tokens:
        raise PatchApplyError("remove operation does not apply to the whole document")
    parent, key = _parent(doc, tokens[:-1]), tokens[-1]
    if isinstance(parent, dict):
        if key not in parent:
            raise PatchApplyError("remove operation does not apply: doc is missing path")
        del parent[key]
    elif isinstance(parent, list):
        del parent[_index(key, len(parent), False)]
    else:
        raise PatchApplyError("remove operation does not apply: doc is missing path")
    return doc


def _replace(doc, tokens, value):
    if not tokens:
        return value
    parent, key = _parent(doc, tokens[:-1]), tokens[-1]
    if isinstance(parent, dict):
        if key not in parent:
            raise PatchApplyError("replace operation does not apply: doc is missing key")
        parent[key] = value
    elif isinstance(parent, list):
        parent[_index(key, len(parent), False)] = value
    else:
        raise PatchApplyError("replace operation does not apply: doc is missing path")
    return doc


def json_patch(doc, ops):
    """RFC 6902, atomically (the caller passes a copy)."""
    if not isinstance(ops, list):
        raise PatchDecodeError("json: cannot unmarshal %s into Go value of type jsonpatch.Patch"
                               % ("object" if isinstance(ops, dict) else type(ops).__name__))
    for op in ops:
        if not isinstance(op, dict):
            raise PatchDecodeError("json: cannot unmarshal %s into Go value of type "
                                   "jsonpatch.Operation" % type(op).__name__)
    for op in ops:
        kind, path = op.get("op"), op.get("path")
        if kind == "add":
            doc = _add(doc, _pointer(path), copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, _pointer(path))
        elif kind == "replace":
            doc = _replace(doc, _pointer(path), copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            src, dst = _pointer(op.get("from")), _pointer(path)
            if kind == "move" and dst[:len(src)] == src and dst != src:
                raise PatchApplyError("move operation cannot move into its own child")
            value = copy.deepcopy(_get(doc, src))
            if kind == "move":
                doc = _remove(doc, src)
            doc = _add(doc, dst, value)
        elif kind == "test":
            tokens = _pointer(path)
            try:
                actual = _get(doc, tokens)
            except PatchApplyError:
                # a missing member equals null (evanphx/json-patch), a missing parent fails
                _parent(doc, tokens[:-1])
                if op.get("value") is None:
                    continue
                raise PatchApplyError(f"testing value {path} failed: test failed")
            if not json_equal(actual, op.get("value")):
                raise PatchApplyError(f"testing value {path} failed: test failed")
        else:
            raise PatchApplyError(f"Unexpected kind: {kind}")
    return doc


def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def strategic_merge(target, patch, keys, path=()):
    """Strategic merge patch: merge semantics, merge keys for known lists,
    and the $patch / $retainKeys / $deleteFromPrimitiveList directives."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys") or k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(out.get(field), list) and isinstance(v, list):
                out[field] = [x for x in out[field] if not any(json_equal(x, d) for d in v)]
            continue
        sub = path + (k,)
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list) and sub in keys:
            out[k] = _merge_list(out.get(k), v, keys[sub], keys, sub)
        elif isinstance(v, dict):
            if v.get("$patch") == "delete":
                out.pop(k, None)
            else:
                out[k] = strategic_merge(out.get(k), v, keys, sub)
        else:
            out[k] = copy.deepcopy(v)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _merge_list(cur, items, mkey, keys, path):
    if any(isinstance(e, dict) and e.get("$patch") == "replace" for e in items):
        return [copy.deepcopy(e) for e in items
                if not (isinstance(e, dict) and e.get("$patch") == "replace")]
    out = list(cur) if isinstance(cur, list) else []
    if mkey == PRIMITIVE:
        for e in items:
            if not any(json_equal(e, x) for x in out):
                out.append(copy.deepcopy(e))
        return out
    for e in items:
        if not isinstance(e, dict):
            continue
        at = next((i for i, x in enumerate(out)
                   if isinstance(x, dict) and mkey in e and json_equal(x.get(mkey), e[mkey])), None)
        if e.get("$patch") == "delete":
            if at is not None:
                del out[at]
            continue
        if at is None:
            out.append(strategic_merge({}, e, keys, path))
        else:
            out[at] = strategic_merge(out[at], e, keys, path)
    return out


def apply_patch(res, ctype, doc, patch):
    if ctype == JSON_PATCH:
        return json_patch(doc, patch)
    if not isinstance(patch, dict):
        raise PatchDecodeError("the patch is not a JSON object")
    if ctype == MERGE_PATCH:
        return merge_patch(doc, patch)
    return strategic_merge(doc, patch, res.smp_keys)


# --------------------------------------------------------------------------
# selectors


class SelectorError(Exception):
    pass


_LABEL_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_LABEL_VAL = r"[-A-Za-z0-9_.]*"


def _split_top(s):
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_label_selector(s):
    reqs = []
    if s is None or not s.strip():
        return reqs
    for part in _split_top(s):
        p = part.strip()
        m = re.fullmatch(rf"!\s*({_LABEL_KEY})", p)
        if m:
            reqs.append(("!", m.group(1), None))
            continue
        m = re.fullmatch(rf"({_LABEL_KEY})\s+(in|notin)\s*\(([^()]*)\)", p)
        if m:
            vals = [v.strip() for v in m.group(3).split(",") if v.strip()]
            reqs.append((m.group(2), m.group(1), set(vals)))
            continue
        m = re.fullmatch(rf"({_LABEL_KEY})\s*(==|=|!=)\s*({_LABEL_VAL})", p)
        if m:
            op = "=" if m.group(2) == "==" else m.group(2)
            reqs.append((op, m.group(1), m.group(3)))
            continue
        m = re.fullmatch(rf"({_LABEL_KEY})\s*(>|<)\s*(-?\d+)", p)
        if m:
            reqs.append((m.group(2), m.group(1), int(m.group(3))))
            continue
        m = re.fullmatch(rf"({_LABEL_KEY})", p)
        if m:
            reqs.append(("exists", m.group(1), None))
            continue
        raise SelectorError(f"unable to parse requirement: {_go_quote(p)}")
    return reqs


def labels_match(reqs, obj):
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for op, key, val in reqs:
        has = key in labels
        cur = labels.get(key)
        if op == "exists" and not has:
            return False
        if op == "!" and has:
            return False
        if op == "=" and (not has or cur != val):
            return False
        if op == "!=" and has and cur == val:
            return False
        if op == "in" and (not has or cur not in val):
            return False
        if op == "notin" and has and cur in val:
            return False
        if op in (">", "<"):
            try:
                n = int(cur) if has else None
            except ValueError:
                n = None
            if n is None or (op == ">" and not n > val) or (op == "<" and not n < val):
                return False
    return True


def _split_escaped(s, sep):
    parts, cur, esc = [], [], False
    for ch in s:
        if esc:
            cur.append("\\" + ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _unescape(s):
    return re.sub(r"\\(.)", r"\1", s)


def parse_field_selector(res, s):
    """fields.ParseSelector, then the kind's field label conversion."""
    terms = []
    if s is None or s == "":
        return terms
    for term in _split_escaped(s, ","):
        found = None
        for i in range(len(term)):
            for op in ("!=", "==", "="):
                if term.startswith(op, i):
                    found = (term[:i], op, term[i + len(op):])
                    break
            if found:
                break
        if not found:
            raise SelectorError(f"invalid selector: '{s}'; can't understand '{term}'")
        label, op, value = found
        label = label.strip()
        if label not in res.field_labels:
            raise SelectorError(res.field_error(label))
        terms.append((label, "!=" if op == "!=" else "=", _unescape(value)))
    return terms


def fields_match(res, terms, obj):
    for label, op, value in terms:
        cur = res.field_value(obj, label)
        if (op == "=") != (cur == value):
            return False
    return True


# --------------------------------------------------------------------------
# list options


def parse_bool(v):
    """apimachinery runtime.Convert_Slice_string_To_bool."""
    if v is None:
        return False
    return not (v == "0" or v.lower() == "false")


def validate_list_options(params, watch):
    """apimachinery pkg/apis/meta/internalversion/validation.ValidateListOptions."""
    errs = []
    match = first(params, "resourceVersionMatch") or ""
    rv = first(params, "resourceVersion") or ""
    has_sie = "sendInitialEvents" in params
    cont = first(params, "continue") or ""
    forbidden = "FieldValueForbidden"
    if watch:
        if has_sie and match != "NotOlderThan":
            errs.append(("resourceVersionMatch", forbidden,
                         "Forbidden: sendInitialEvents requires setting resourceVersionMatch "
                         "to NotOlderThan"))
        if match:
            if not has_sie:
                errs.append(("resourceVersionMatch", forbidden,
                             "Forbidden: resourceVersionMatch is forbidden for watch unless "
                             "sendInitialEvents is provided"))
            if match != "NotOlderThan":
                errs.append(("resourceVersionMatch", "FieldValueNotSupported",
                             f"Unsupported value: {_go_quote(match)}: supported values: "
                             "\"NotOlderThan\""))
            if cont:
                errs.append(("resourceVersionMatch", forbidden,
                             "Forbidden: resourceVersionMatch is forbidden when continue is "
                             "provided"))
        return errs
    if match:
        if not rv:
            errs.append(("resourceVersionMatch", forbidden,
                         "Forbidden: resourceVersionMatch is forbidden unless resourceVersion "
                         "is provided"))
        if cont:
            errs.append(("resourceVersionMatch", forbidden,
                         "Forbidden: resourceVersionMatch is forbidden when continue is provided"))
        if match not in ("Exact", "NotOlderThan"):
            errs.append(("resourceVersionMatch", "FieldValueNotSupported",
                         f"Unsupported value: {_go_quote(match)}: supported values: \"Exact\", "
                         "\"NotOlderThan\", \"\""))
        if match == "Exact" and rv == "0":
            errs.append(("resourceVersionMatch", forbidden,
                         "Forbidden: resourceVersionMatch \"exact\" is forbidden for "
                         "resourceVersion \"0\""))
    if has_sie:
        errs.append(("sendInitialEvents", forbidden,
                     "Forbidden: sendInitialEvents is forbidden for list"))
    return errs


def first(params, key, default=None):
    v = params.get(key)
    return v[0] if v else default


def encode_continue(rv, start):
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start},
                     separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token):
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        return int(data["rv"]), str(data["start"])
    except Exception as e:  # noqa: BLE001 - any malformed token
        raise ValueError(f"continue key is not valid: {e}") from None


# --------------------------------------------------------------------------
# state


class Event:
    __slots__ = ("rv", "type", "res", "obj", "prev")

    def __init__(self, rv, etype, res, obj, prev):
        self.rv, self.type, self.res, self.obj, self.prev = rv, etype, res, obj, prev


class Watcher:
    def __init__(self, res, query):
        self.res = res
        self.query = query
        self.queue = deque()
        self.since = time.time()


class Reply:
    def __init__(self, code, body, headers=None):
        self.code, self.body, self.headers = code, body, headers or {}


class App:
    def __init__(self, bookmark_interval=None):
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.rv = START_RV
        self.floor = START_RV  # a watch from below this resourceVersion gets 410
        self.objects = {p: {} for p in RESOURCES}
        self.history = deque()
        self.watchers = []
        self.requests = []
        self.seq = 0
        self.concurrent_writes = 0
        self.defaults = copy.deepcopy(DEFAULT_CONFIG)
        if bookmark_interval is not None:
            self.defaults["bookmark_interval"] = bookmark_interval
        self.config = copy.deepcopy(self.defaults)
        self.endpoint = ""

    # -- store (callers hold self.cond) ---------------------------------

    def _emit(self, ev):
        self.history.append(ev)
        limit = max(1, int(self.config.get("history_limit") or 1))
        while len(self.history) > limit:
            self.floor = self.history.popleft().rv
        for w in self.watchers:
            if w.res is ev.res:
                w.queue.append(ev)
        self.cond.notify_all()

    def _store(self, res, obj, etype, prev):
        self.rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        obj = canonicalize(res, obj)
        self.objects[res.plural][obj["metadata"]["name"]] = obj
        self._emit(Event(self.rv, etype, res, copy.deepcopy(obj), prev))
        return copy.deepcopy(obj)

    def _delete(self, res, name):
        obj = self.objects[res.plural].pop(name)
        self.rv += 1
        dead = copy.deepcopy(obj)
        dead["metadata"]["resourceVersion"] = str(self.rv)
        self._emit(Event(self.rv, "DELETED", res, dead, obj))
        return copy.deepcopy(dead)

    def _new_object(self, res, obj, existing=None):
        obj = copy.deepcopy(obj)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        meta = obj.setdefault("metadata", {})
        meta.pop("resourceVersion", None)
        if not meta.get("uid"):
            meta["uid"] = (existing or {}).get("metadata", {}).get("uid") or str(uuid.uuid4())
        if not meta.get("creationTimestamp"):
            meta["creationTimestamp"] = ((existing or {}).get("metadata", {})
                                         .get("creationTimestamp") or now_rfc3339())
        return obj

    def put_object(self, obj):
        """Create or replace (control API and --load). Returns (created, stored)."""
        if not isinstance(obj, dict):
            raise ValueError("an object must be a JSON object")
        res = BY_KIND.get(obj.get("kind", ""))
        if res is None:
            raise ValueError(f"unknown kind {obj.get('kind')!r}: one of "
                             + ", ".join(sorted(BY_KIND)))
        name = (obj.get("metadata") or {}).get("name")
        if not name or not isinstance(name, str):
            raise ValueError("metadata.name is required")
        with self.cond:
            existing = self.objects[res.plural].get(name)
            new = self._new_object(res, obj, existing)
            stored = self._store(res, new, "MODIFIED" if existing else "ADDED", existing)
        return existing is None, stored

    def _finish_update(self, res, name, cur, new):
        """Checks an updated object against the stored one; returns a Reply
        on failure, else None (new is fixed up in place)."""
        if not isinstance(new, dict) or not isinstance(new.get("metadata", {}), dict):
            return Reply(400, st_bad_request("the patched object is not a valid object"))
        new["apiVersion"], new["kind"] = res.api_version, res.kind
        meta = new.setdefault("metadata", {})
        cmeta = cur["metadata"]
        if meta.get("name", name) != name:
            return Reply(400, st_bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on "
                f"the URL ({name})"))
        if meta.get("uid") and meta["uid"] != cmeta.get("uid"):
            return Reply(409, st_conflict(
                res, name, f"Precondition failed: UID in precondition: {meta['uid']}, "
                           f"UID in object meta: {cmeta.get('uid')}"))
        rv = meta.get("resourceVersion")
        if rv not in (None, "") and str(rv) != cmeta.get("resourceVersion"):
            return Reply(409, st_conflict(res, name))
        meta["name"] = name
        meta["uid"] = cmeta.get("uid")
        meta["creationTimestamp"] = cmeta.get("creationTimestamp")
        meta["resourceVersion"] = cmeta.get("resourceVersion")
        return None

    def _commit(self, res, name, cur, new):
        new = canonicalize(res, new)
        if json_equal(new, cur):  # no-op: no write, no new resourceVersion, no event
            return Reply(200, copy.deepcopy(cur))
        return Reply(200, self._store(res, new, "MODIFIED", cur))

    def _concurrent_write(self, res, cur):
        """Another writer changes the Node just before our patch is applied."""
        self.config["conflict_next_patches"] = int(self.config["conflict_next_patches"]) - 1
        self.concurrent_writes += 1
        n = self.concurrent_writes
        new = copy.deepcopy(cur)
        taint = copy.deepcopy(self.config.get("conflict_taint")) or {
            "key": "fake.k8s.io/concurrent-writer", "value": str(n), "effect": "NoSchedule"}
        spec = new.setdefault("spec", {})
        taints = [t for t in (spec.get("taints") or [])
                  if not (t.get("key") == taint.get("key") and t.get("effect") == taint.get("effect"))]
        spec["taints"] = taints + [taint]
        new["metadata"].setdefault("annotations", {})["fake.k8s.io/concurrent-writes"] = str(n)
        log.info("concurrent writer #%d changes %s/%s before the patch", n, res.plural,
                 cur["metadata"]["name"])
        self._store(res, new, "MODIFIED", cur)
        return self.objects[res.plural][cur["metadata"]["name"]]

    # -- API verbs -------------------------------------------------------

    def api_get(self, res, name):
        with self.cond:
            obj = self.objects[res.plural].get(name)
            obj = copy.deepcopy(obj) if obj else None
        return Reply(200, obj) if obj else Reply(404, st_not_found(res, name))

    def api_list(self, res, params):
        errs = validate_list_options(params, watch=False)
        if errs:
            return Reply(422, st_invalid("meta.k8s.io", "ListOptions", "", errs))
        try:
            lsel = parse_label_selector(first(params, "labelSelector"))
            fsel = parse_field_selector(res, first(params, "fieldSelector"))
        except SelectorError as e:
            return Reply(400, st_bad_request(str(e)))
        try:
            limit = int(first(params, "limit") or 0)
        except ValueError:
            return Reply(400, st_bad_request(f"invalid limit {first(params, 'limit')!r}"))
        rv_param = first(params, "resourceVersion") or ""
        with self.cond:
            cur_rv, floor = self.rv, self.floor
            items = [copy.deepcopy(o) for _, o in sorted(self.objects[res.plural].items())
                     if labels_match(lsel, o) and fields_match(res, fsel, o)]
        if first(params, "resourceVersionMatch") == "Exact" and rv_param:
            try:
                n = int(rv_param)
            except ValueError:
                return Reply(400, st_bad_request(f"invalid resource version: {_go_quote(rv_param)}"))
            if n < floor:
                return Reply(410, st_expired(f"too old resource version: {n} ({floor})"))
        list_rv = cur_rv
        token = first(params, "continue")
        if token:
            try:
                list_rv, start = decode_continue(token)
            except ValueError as e:
                return Reply(400, st_bad_request(str(e)))
            items = [o for o in items if o["metadata"]["name"] >= start]
        meta = {"resourceVersion": str(list_rv)}
        if limit > 0 and len(items) > limit:
            rest = len(items) - limit
            items = items[:limit]
            meta["continue"] = encode_continue(list_rv, items[-1]["metadata"]["name"] + "\x00")
            if not lsel and not fsel:
                meta["remainingItemCount"] = rest
        return Reply(200, {"kind": res.list_kind, "apiVersion": res.api_version,
                           "metadata": meta, "items": [strip_type(o) for o in items]})

    def api_patch(self, res, name, ctype, body, params):
        if ctype not in PATCH_TYPES:
            return Reply(415, st_unsupported_media_type())
        if ctype == APPLY_PATCH and not first(params, "fieldManager"):
            return Reply(422, st_invalid("meta.k8s.io", "PatchOptions", "", [
                ("fieldManager", "FieldValueRequired",
                 "Required value: is required for apply patch")]))
        try:
            patch = json.loads(body.decode("utf-8") or "null")
        except (ValueError, UnicodeDecodeError) as e:
            if ctype == APPLY_PATCH:
                return Reply(400, st_bad_request(
                    f"error decoding YAML: this stand-in reads only JSON apply bodies: {e}"))
            return Reply(400, st_bad_request(f"invalid character in patch body: {e}"))
        with self.cond:
            cur = self.objects[res.plural].get(name)
            if cur is None:
                if ctype == APPLY_PATCH and isinstance(patch, dict):
                    new = self._new_object(res, dict(patch, metadata=dict(
                        patch.get("metadata") or {}, name=name)))
                    return Reply(201, self._store(res, new, "ADDED", None))
                return Reply(404, st_not_found(res, name))
            if res.plural == "nodes" and int(self.config.get("conflict_next_patches") or 0) > 0:
                cur = self._concurrent_write(res, cur)
            try:
                new = apply_patch(res, ctype, copy.deepcopy(cur), patch)
            except PatchDecodeError as e:
                return Reply(400, st_bad_request(str(e)))
            except PatchApplyError as e:
                log.info("patch of %s/%s does not apply: %s", res.plural, name, e)
                return Reply(422, st_patch_not_applied())
            failed = self._finish_update(res, name, cur, new)
            if failed:
                return failed
            return self._commit(res, name, cur, new)

    def api_update(self, res, name, body):
        try:
            new = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            return Reply(400, st_bad_request(f"invalid JSON body: {e}"))
        if not isinstance(new, dict):
            return Reply(400, st_bad_request("the body is not an object"))
        with self.cond:
            cur = self.objects[res.plural].get(name)
            if cur is None:
                return Reply(404, st_not_found(res, name))
            failed = self._finish_update(res, name, cur, new)
            if failed:
                return failed
            return self._commit(res, name, cur, new)

    def api_create(self, res, body):
        try:
            obj = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            return Reply(400, st_bad_request(f"invalid JSON body: {e}"))
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata", {}), dict):
            return Reply(400, st_bad_request("the body is not an object"))
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            return Reply(422, st_invalid("", res.kind, "", [
                ("metadata.name", "FieldValueRequired",
                 "Required value: name or generateName is required")]))
        if (obj.get("metadata") or {}).get("resourceVersion"):
            return Reply(400, st_bad_request(
                "resourceVersion should not be set on objects to be created"))
        with self.cond:
            if name in self.objects[res.plural]:
                return Reply(409, st_already_exists(res, name))
            meta = obj.setdefault("metadata", {})
            meta.pop("uid", None)
            meta.pop("creationTimestamp", None)
            return Reply(201, self._store(res, self._new_object(res, obj), "ADDED", None))

    def api_delete(self, res, name):
        with self.cond:
            if name not in self.objects[res.plural]:
                return Reply(404, st_not_found(res, name))
            return Reply(200, self._delete(res, name))

    # -- control ---------------------------------------------------------

    def set_config(self, update):
        if not isinstance(update, dict):
            raise ValueError("the config must be a JSON object")
        unknown = sorted(set(update) - set(DEFAULT_CONFIG))
        if unknown:
            raise ValueError(f"unknown config keys {unknown}: known are {sorted(DEFAULT_CONFIG)}")
        for key in ("forbidden", "fail_next"):
            if key in update and (not isinstance(update[key], list)
                                  or not all(isinstance(r, dict) for r in update[key])):
                raise ValueError(f"{key} must be a list of objects")
        for key in ("conflict_next_patches", "history_limit"):
            if key in update and (not isinstance(update[key], int) or update[key] < 0):
                raise ValueError(f"{key} must be a non-negative integer")
        for key in ("bookmark_interval", "delay_ms", "default_watch_timeout"):
            if key in update and (isinstance(update[key], bool)
                                  or not isinstance(update[key], (int, float))):
                raise ValueError(f"{key} must be a number")
        if "user" in update and not isinstance(update["user"], str):
            raise ValueError("user must be a string")
        if "conflict_taint" in update and not isinstance(update["conflict_taint"], (dict, type(None))):
            raise ValueError("conflict_taint must be a taint object or null")
        with self.cond:
            for k, v in update.items():
                self.config[k] = copy.deepcopy(v)
            self.cond.notify_all()
            return copy.deepcopy(self.config)

    def reset(self):
        with self.cond:
            for res in RESOURCES.values():
                for name in sorted(self.objects[res.plural]):
                    self._delete(res, name)
            self.requests.clear()
            self.config = copy.deepcopy(self.defaults)
            self.concurrent_writes = 0

    def compact(self):
        with self.cond:
            self.history.clear()
            self.floor = self.rv
            return {"resourceVersion": str(self.rv), "compactedTo": str(self.floor)}

    def match_rule(self, rules, verb, res, name, consume=False):
        for rule in rules:
            if rule.get("verb", "*") not in ("*", verb):
                continue
            if rule.get("resource", "*") not in ("*", res.plural):
                continue
            if rule.get("name") not in (None, name):
                continue
            if consume:
                count = int(rule.get("count", 1))
                if count <= 1:
                    rules.remove(rule)
                else:
                    rule["count"] = count - 1
            return copy.deepcopy(rule)
        return None


# --------------------------------------------------------------------------
# HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "k8sapi-fake"
    sys_version = ""

    # quiet BaseHTTPRequestHandler; we log ourselves
    def log_request(self, code="-", size="-"):
        pass

    def log_message(self, fmt, *args):
        log.debug("%s - %s", self.address_string(), fmt % args)

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    # -- plumbing --------------------------------------------------------

    @property
    def app(self) -> App:
        return self.server.app

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def send_bytes(self, code, body, ctype, headers=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, code, obj, headers=None):
        self.send_bytes(code, dumps(obj), "application/json", headers)

    def send_reply(self, reply):
        self.send_json(reply.code, reply.body, reply.headers)
        return reply.code

    def start_stream(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.end_headers()

    def write_chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_stream(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def client_gone(self):
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if readable:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True
        return False

    def dispatch(self, method):
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self.send_bytes(400, b"bad request body\n", "text/plain; charset=utf-8")
            return
        url = urlsplit(self.path)
        try:
            if url.path == "/_fake" or url.path.startswith("/_fake/"):
                self.control(method, url.path, url.query, body)
            else:
                self.api(method, url.path, url.query, body)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        except Exception:  # noqa: BLE001 - answer 500 and keep serving
            log.exception("error answering %s %s", method, self.path)
            self.close_connection = True
            try:
                self.send_json(500, status(500, "InternalError",
                                           "Internal error occurred: k8sapi stand-in failed"))
            except OSError:
                pass

    # -- API -------------------------------------------------------------

    def api(self, method, path, query, body):
        app = self.app
        params = parse_qs(query, keep_blank_values=True)
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            parsed = json.loads(body.decode("utf-8")) if body else None
        except (ValueError, UnicodeDecodeError):
            parsed = body.decode("utf-8", "replace")
        with app.cond:
            app.seq += 1
            record = {
                "seq": app.seq, "time": time.time(), "method": method, "path": path,
                "query": query, "params": {k: v[0] for k, v in params.items()},
                "content_type": self.headers.get("Content-Type"),
                "accept": self.headers.get("Accept"),
                "user_agent": self.headers.get("User-Agent"),
                "body": parsed, "status": None,
            }
            app.requests.append(record)
            delay = float(app.config.get("delay_ms") or 0) / 1000.0
        if delay > 0:
            time.sleep(delay)
        code = self.route(method, path, params, ctype, body)
        record["status"] = code
        log.info("%s %s -> %s", method, self.path, code)

    def route(self, method, path, params, ctype, body):
        app = self.app
        segs = [unquote(s) for s in path.split("/") if s]
        if path in ("/healthz", "/livez", "/readyz"):
            self.send_bytes(200, b"ok", "text/plain; charset=utf-8")
            return 200
        if method == "GET":
            disc = self.discovery(segs)
            if disc is not None:
                return self.send_reply(Reply(200, disc))
        if segs[:2] == ["api", "v1"]:
            group, rest = "", segs[2:]
        elif segs[:3] == ["apis", "storage.k8s.io", "v1"]:
            group, rest = "storage.k8s.io", segs[3:]
        elif segs and segs[0] in ("api", "apis"):
            return self.send_reply(Reply(404, st_route_not_found()))
        else:
            self.send_bytes(404, b"404 page not found\n", "text/plain; charset=utf-8")
            return 404
        watch = False
        if rest and rest[0] == "watch":
            watch, rest = True, rest[1:]
        res = BY_PATH.get((group, rest[0])) if rest else None
        if res is None or len(rest) > 2:
            return self.send_reply(Reply(404, st_route_not_found()))
        name = rest[1] if len(rest) == 2 else ""
        watch = watch or parse_bool(first(params, "watch"))
        if method == "GET":
            verb = "watch" if watch else ("get" if name else "list")
        elif watch:
            return self.send_reply(Reply(405, st_method_not_allowed()))
        elif method == "PATCH" and name:
            verb = "patch"
        elif method == "PUT" and name:
            verb = "update"
        elif method == "POST" and not name:
            verb = "create"
        elif method == "DELETE" and name:
            verb = "delete"
        else:
            return self.send_reply(Reply(405, st_method_not_allowed()))

        with app.cond:
            denied = app.match_rule(app.config["forbidden"], verb, res, name)
            fault = None if denied else app.match_rule(app.config["fail_next"], verb, res, name,
                                                       consume=True)
            user = app.config.get("user") or DEFAULT_USER
        if denied:
            return self.send_reply(Reply(403, st_forbidden(res, verb, name, user)))
        if fault:
            if fault.get("drop"):
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return 0
            code = int(fault.get("code", 500))
            st = st_for_code(code, res, name, verb, fault.get("message", ""), user)
            return self.send_reply(Reply(code, st, {"Retry-After": "1"} if code == 429 else None))

        if verb == "watch":
            return self.watch(res, name, params)
        if verb == "get":
            return self.send_reply(app.api_get(res, name))
        if verb == "list":
            return self.send_reply(app.api_list(res, params))
        if verb == "patch":
            return self.send_reply(app.api_patch(res, name, ctype, body, params))
        if verb == "update":
            return self.send_reply(app.api_update(res, name, body))
        if verb == "create":
            return self.send_reply(app.api_create(res, body))
        return self.send_reply(app.api_delete(res, name))

    def discovery(self, segs):
        port = self.server.server_address[1]
        storage_group = {
            "name": "storage.k8s.io",
            "versions": [{"groupVersion": "storage.k8s.io/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": "storage.k8s.io/v1", "version": "v1"},
        }
        if segs == ["version"]:
            return dict(VERSION_INFO)
        if segs == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{port}"}]}
        if segs == ["apis"]:
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [storage_group]}
        if segs == ["apis", "storage.k8s.io"]:
            return dict({"kind": "APIGroup", "apiVersion": "v1"}, **storage_group)
        if segs == ["api", "v1"]:
            return {"kind": "APIResourceList", "groupVersion": "v1",
                    "resources": [RESOURCES["nodes"].discovery()]}
        if segs == ["apis", "storage.k8s.io", "v1"]:
            return {"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": "storage.k8s.io/v1",
                    "resources": [RESOURCES["csinodes"].discovery(),
                                  RESOURCES["volumeattachments"].discovery()]}
        return None

    # -- watch -----------------------------------------------------------

    def watch(self, res, name, params):
        app = self.app
        errs = validate_list_options(params, watch=True)
        if errs:
            return self.send_reply(Reply(422, st_invalid("meta.k8s.io", "ListOptions", "", errs)))
        try:
            lsel = parse_label_selector(first(params, "labelSelector"))
            fsel = parse_field_selector(res, first(params, "fieldSelector"))
        except SelectorError as e:
            return self.send_reply(Reply(400, st_bad_request(str(e))))
        if name:
            fsel.append(("metadata.name", "=", name))
        allow_bookmarks = parse_bool(first(params, "allowWatchBookmarks"))
        sie = parse_bool(first(params, "sendInitialEvents")) if "sendInitialEvents" in params else None
        rv_param = first(params, "resourceVersion")
        if rv_param not in (None, "", "0"):
            try:
                rv_num = int(rv_param)
                if rv_num < 0:
                    raise ValueError
            except ValueError:
                return self.send_reply(Reply(400, st_bad_request(
                    f"invalid resource version: {_go_quote(rv_param)}")))
        try:
            timeout = int(first(params, "timeoutSeconds") or 0)
        except ValueError:
            timeout = 0
        if timeout <= 0:
            with app.cond:
                timeout = float(app.config.get("default_watch_timeout") or 1800)
        send_initial = sie if sie is not None else rv_param in (None, "", "0")

        def matches(obj):
            return labels_match(lsel, obj) and fields_match(res, fsel, obj)

        w = Watcher(res, self.path)
        too_old = None
        initial = []
        with app.cond:
            if send_initial:
                start = app.rv
                initial = [copy.deepcopy(o) for _, o in sorted(app.objects[res.plural].items())
                           if matches(o)]
            elif rv_param in (None, "", "0"):
                start = app.rv
            elif rv_num < app.floor:
                too_old = st_expired(f"too old resource version: {rv_num} ({app.floor})")
            else:
                start = rv_num
                w.queue.extend(ev for ev in app.history if ev.res is res and ev.rv > rv_num)
            if too_old is None:
                app.watchers.append(w)
        log.info("watch %s start (%s)", res.plural, self.path)
        gone = False
        try:
            self.start_stream()
            if too_old is not None:
                self.write_chunk(dumps({"type": "ERROR", "object": too_old}))
                self.end_stream()
                return 200
            for obj in initial:
                self.write_chunk(dumps({"type": "ADDED", "object": obj}))
            if sie and allow_bookmarks:
                self.write_chunk(dumps(self.bookmark(res, start, initial_end=True)))
            cursor = start
            deadline = time.monotonic() + timeout
            next_bookmark = None
            while True:
                with app.cond:
                    if not w.queue and not app.stop.is_set():
                        now = time.monotonic()
                        wait = min(0.5, deadline - now)
                        if next_bookmark is not None:
                            wait = min(wait, next_bookmark - now)
                        if wait > 0:
                            app.cond.wait(wait)
                    events = list(w.queue)
                    w.queue.clear()
                    drained_rv = app.rv
                    interval = float(app.config.get("bookmark_interval") or 0)
                if app.stop.is_set():
                    break
                for ev in events:
                    if ev.rv <= cursor:
                        continue
                    cursor = ev.rv
                    out = self.convert(ev, matches)
                    if out:
                        self.write_chunk(dumps(out))
                now = time.monotonic()
                if allow_bookmarks and interval > 0:
                    if next_bookmark is None:
                        next_bookmark = now + interval
                    elif now >= next_bookmark:
                        cursor = max(cursor, drained_rv)
                        self.write_chunk(dumps(self.bookmark(res, cursor)))
                        next_bookmark = now + interval
                else:
                    next_bookmark = None
                if now >= deadline:
                    break
                if self.client_gone():
                    gone = True
                    break
            if not gone:
                self.end_stream()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            gone = True
        finally:
            with app.cond:
                if w in app.watchers:
                    app.watchers.remove(w)
            log.info("watch %s end (%s)", res.plural, "client went away" if gone else "done")
        if gone:
            self.close_connection = True
        return 200

    @staticmethod
    def bookmark(res, rv, initial_end=False):
        meta = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {INITIAL_EVENTS_END: "true"}
        return {"type": "BOOKMARK",
                "object": {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta}}

    @staticmethod
    def convert(ev, matches):
        """What a watcher with this selector sees of an event (cacheWatcher)."""
        if ev.type == "ADDED":
            return {"type": "ADDED", "object": ev.obj} if matches(ev.obj) else None
        if ev.type == "DELETED":
            return {"type": "DELETED", "object": ev.obj} if matches(ev.obj) else None
        now_ok = matches(ev.obj)
        was_ok = ev.prev is not None and matches(ev.prev)
        if now_ok and was_ok:
            return {"type": "MODIFIED", "object": ev.obj}
        if now_ok:
            return {"type": "ADDED", "object": ev.obj}
        if was_ok:
            gone = copy.deepcopy(ev.prev)
            gone["metadata"]["resourceVersion"] = str(ev.rv)
            return {"type": "DELETED", "object": gone}
        return None

    # -- control ---------------------------------------------------------

    def control(self, method, path, query, body):
        app = self.app
        params = parse_qs(query, keep_blank_values=True)
        segs = [unquote(s) for s in path.split("/") if s][1:]
        try:
            data = json.loads(body.decode("utf-8")) if body.strip() else None
        except (ValueError, UnicodeDecodeError) as e:
            self.send_json(400, {"error": f"invalid JSON body: {e}"})
            return

        def ok(obj, code=200):
            self.send_json(code, obj)

        def fail(code, message):
            self.send_json(code, {"error": message})

        log.debug("control %s %s", method, self.path)
        try:
            if segs == ["info"] and method == "GET":
                with app.cond:
                    return ok({"endpoint": app.endpoint, "pid": os.getpid(),
                               "resourceVersion": str(app.rv)})
            if segs == ["kubeconfig"] and method == "GET":
                return ok(kubeconfig(app.endpoint))
            if segs == ["objects"] and method == "POST":
                if isinstance(data, dict) and "items" in data and "kind" not in data:
                    data = data["items"]
                if isinstance(data, list):
                    return ok({"items": [app.put_object(o)[1] for o in data]})
                created, stored = app.put_object(data)
                return ok(stored, 201 if created else 200)
            if segs and segs[0] == "objects" and method in ("GET", "DELETE") and len(segs) <= 3:
                if len(segs) == 1 and method == "GET":
                    with app.cond:
                        return ok({p: [copy.deepcopy(o) for _, o in sorted(objs.items())]
                                   for p, objs in app.objects.items()})
                res = RESOURCES.get(segs[1])
                if res is None:
                    return fail(404, f"unknown resource {segs[1]!r}: one of {sorted(RESOURCES)}")
                if len(segs) == 2 and method == "GET":
                    with app.cond:
                        return ok([copy.deepcopy(o) for _, o in sorted(app.objects[res.plural].items())])
                if len(segs) == 3:
                    with app.cond:
                        if segs[2] not in app.objects[res.plural]:
                            return fail(404, f"no {res.plural}/{segs[2]}")
                        if method == "GET":
                            return ok(copy.deepcopy(app.objects[res.plural][segs[2]]))
                        return ok(app._delete(res, segs[2]))
            if segs == ["requests"] and method == "GET":
                want_method = first(params, "method")
                want_path = first(params, "path")
                prefix = first(params, "path_prefix")
                with app.cond:
                    out = [copy.deepcopy(r) for r in app.requests
                           if (not want_method or r["method"] == want_method.upper())
                           and (not want_path or r["path"] == want_path)
                           and (not prefix or r["path"].startswith(prefix))]
                return ok({"count": len(out), "requests": out})
            if segs == ["requests", "reset"] and method == "POST":
                with app.cond:
                    app.requests.clear()
                return ok({"count": 0})
            if segs == ["config"] and method == "GET":
                with app.cond:
                    return ok(copy.deepcopy(app.config))
            if segs == ["config"] and method == "POST":
                return ok(app.set_config(data if data is not None else {}))
            if segs == ["reset"] and method == "POST":
                app.reset()
                return ok({"reset": True})
            if segs == ["compact"] and method == "POST":
                return ok(app.compact())
            if segs == ["watches"] and method == "GET":
                with app.cond:
                    return ok({"count": len(app.watchers), "watches": [
                        {"resource": w.res.plural, "path": w.query, "since": w.since}
                        for w in app.watchers]})
        except ValueError as e:
            return fail(400, str(e))
        return fail(404, f"no control endpoint {method} {path}")


def kubeconfig(endpoint):
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "k8sapi-fake", "cluster": {"server": endpoint}}],
        "users": [{"name": "ebs-csi-node", "user": {"token": "k8sapi-fake-token"}}],
        "contexts": [{"name": "k8sapi-fake",
                      "context": {"cluster": "k8sapi-fake", "user": "ebs-csi-node"}}],
        "current-context": "k8sapi-fake",
        "preferences": {},
    }


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def load_file(app, path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, dict) and "items" in data and "kind" not in data:
        data = data["items"]
    if isinstance(data, dict) and data.get("kind", "").endswith("List") and "items" in data:
        kind = data["kind"][:-4]
        data = [dict(item, kind=kind, apiVersion=data.get("apiVersion")) for item in data["items"]]
    for obj in data if isinstance(data, list) else [data]:
        app.put_object(obj)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Kubernetes API server stand-in for tests "
                                             "(see the module docstring and README.md).")
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free)")
    ap.add_argument("--load", action="append", default=[], metavar="FILE",
                    help="JSON object, array or List to create before the ready line; repeatable")
    ap.add_argument("--bookmark-interval", type=float, default=None,
                    help="seconds between periodic watch BOOKMARKs (default 1.0; <= 0: none)")
    ap.add_argument("--log-level", default=os.environ.get("K8SAPI_LOG_LEVEL", "INFO"))
    ap.add_argument("--no-parent-watch", action="store_true",
                    help="keep running when the parent process exits")
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="k8sapi %(asctime)s %(levelname)s %(message)s")

    app = App(bookmark_interval=args.bookmark_interval)
    try:
        for path in args.load:
            load_file(app, path)
    except (OSError, ValueError) as e:
        print(f"k8sapi: cannot load fixtures: {e}", file=sys.stderr)
        return 2
    stop = app.stop

    def on_signal(signum, _frame):
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        server = Server(("127.0.0.1", args.port), Handler)
    except OSError as e:
        print(f"k8sapi: cannot listen on 127.0.0.1:{args.port}: {e}", file=sys.stderr)
        return 2
    server.app = app
    app.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                     name="http", daemon=True).start()

    # The parent is read before the ready line: a parent that dies as soon
    # as it reads that line must not leave us watching our new parent.
    parent = os.getppid()
    sys.stdout.write(json.dumps({"endpoint": app.endpoint, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    log.info("listening on %s", app.endpoint)

    if not args.no_parent_watch and parent > 1:
        def watch_parent():
            while not stop.wait(0.5):
                if os.getppid() != parent:
                    log.warning("parent process %d went away: shutting down", parent)
                    stop.set()

        threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()

    while not stop.wait(0.2):
        pass
    with app.cond:
        app.cond.notify_all()
    server.shutdown()
    server.server_close()
    # let open watch streams write their closing chunk
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        with app.cond:
            if not app.watchers:
                break
        time.sleep(0.02)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
