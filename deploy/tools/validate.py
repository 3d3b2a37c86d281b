#!/usr/bin/env python3
"""Validates rendered Kubernetes manifests for deploy/check.sh.

Every object is checked against the Kubernetes OpenAPI schemas bundled with
kubernetes-validate (strict: unknown fields fail) for each --kube-version, or
against deploy/schemas/ for the snapshot CRD kinds. A kind with no schema fails.

On top of the schemas, each group of files (one rendered bundle, or all of
examples/) gets the checks no schema can make:
  * cluster-scoped kinds carry no namespace; no two objects share kind/ns/name;
  * every container image has an explicit tag or digest, never `latest`;
  * StorageClass / VolumeSnapshotClass / VolumeAttributesClass parameters of
    ebs.csi.aws.com are keys the driver accepts (it rejects unknown keys);
  * PVCs, VolumeSnapshots and claim templates name classes the group defines
    (when it defines any) and snapshot/PVC data sources that exist;
  * every probe and lifecycle hook has exactly one handler, and the named
    ports they use are ports of their container;
  * in any group that installs the driver: the controller is unprivileged,
    the node's socket, plugin and registration paths agree, the node plugin
    gets CSI_NODE_NAME from spec.nodeName and a preStop hook that runs the
    image's binary (the Dockerfile's ENTRYPOINT) in mode pre-stop-hook, the
    node service account is granted no more than NODE_RULES, RBAC references
    resolve, Services select pods and target declared ports, and every driver
    flag and mode is one src/options.rs defines; for a --bundle (a complete
    default installation) also every sidecar with its required flags,
    tolerating all taints, service accounts defined in the bundle and the node
    service account granted exactly NODE_RULES (see check_driver). A group
    with node DaemonSets but neither controller nor CSIDriver is a node-only
    installation (nodeComponentOnly).

Usage: validate.py [--options src/options.rs] [--dockerfile Dockerfile]
                   --kube-version 1.34.0 [--kube-version ...]
                   {--group|--bundle} NAME FILE... [{--group|--bundle} NAME FILE...]
A --bundle is a rendered driver installation: it also gets the driver checks.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import jsonschema
import yaml
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

DRIVER = "ebs.csi.aws.com"
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

CLUSTER_SCOPED = {
    "CSIDriver", "StorageClass", "VolumeAttributesClass", "ClusterRole",
    "ClusterRoleBinding", "PersistentVolume", "Namespace", "PriorityClass",
    "VolumeSnapshotClass", "VolumeSnapshotContent", "CustomResourceDefinition",
}

# Parameter keys the driver accepts (docs/parameters.md). StorageClass keys are
# matched case-insensitively, like the driver does.
SC_KEYS = {
    "type", "iops", "iopspergb", "allowautoiopspergbincrease", "throughput",
    "encrypted", "kmskeyid", "blockexpress", "csi.storage.k8s.io/fstype",
    "blocksize", "inodesize", "bytesperinode", "numberofinodes",
    "ext4bigalloc", "ext4clustersize",
}
SC_PATTERNS = [re.compile(r"^tagspecification_\d+$")]
VSC_KEYS = {
    "fastsnapshotrestoreavailabilityzones", "lockmode", "lockduration",
    "lockexpirationdate", "lockcooloffperiod",
}
VSC_PATTERNS = [re.compile(r"^tagspecification_\d+$")]
VAC_KEYS = {"type", "iops", "throughput"}
VAC_PATTERNS = [re.compile(r"^tagspecification_\d+$"), re.compile(r"^tagdeletion_\d+$")]
# What the node plugin's service account may do, (apiGroup, resource) -> verbs:
# nodes: read its labels (metadata source `kubernetes`) and remove the startup
# taint; csinodes: see that kubelet registered the driver; volumeattachments:
# the preStop hook waits until none names the node. A default installation
# grants exactly this; node.serviceAccount.disableMutation grants less.
NODE_RULES = {
    ("", "nodes"): {"get", "patch"},
    ("storage.k8s.io", "csinodes"): {"get"},
    ("storage.k8s.io", "volumeattachments"): {"get", "list", "watch"},
}
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
PROBE_HANDLERS = {"exec", "httpGet", "tcpSocket", "grpc"}
HOOK_HANDLERS = {"exec", "httpGet", "tcpSocket", "sleep"}

# Keys consumed by the CSI sidecars themselves, never passed to the driver.
SIDECAR_PREFIX = "csi.storage.k8s.io/"
SIDECAR_SECRET_KEY = re.compile(r"^csi\.storage\.k8s\.io/.*secret-(name|namespace)$")


class Report:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.counts: dict[str, int] = {}

    def fail(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}")


def ident(doc: dict) -> str:
    md = doc.get("metadata") or {}
    ns = md.get("namespace")
    return f"{doc.get('kind')}/{ns + '/' if ns else ''}{md.get('name')}"


# ---------------------------------------------------------------- schemas

class Schemas:
    """Strict Kubernetes schemas for one version, plus our CRD schemas."""

    def __init__(self, version: str) -> None:
        wanted = kv.major_minor(version)
        known = [v for v in kv.all_versions() if kv.major_minor(v) == wanted]
        if not known:
            raise SystemExit(f"kubernetes-validate has no schemas for {version}; "
                             f"it knows {kv.all_versions()[0]}..{kv.latest_version()}")
        self.version = known[-1]
        self.dir = f"kubernetes-json-schema/v{self.version}-local-strict"
        defs = kv.schema_contents(f"{self.dir}/_definitions.json", version)
        self.registry = Resource.from_contents(defs) @ Registry()
        self.cache: dict[tuple[str, str], dict | None] = {}

    def schema(self, api_version: str, kind: str) -> dict | None:
        key = (api_version, kind)
        if key not in self.cache:
            group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
            name = f"{kind.lower()}-{group}.json"
            local = SCHEMA_DIR / name
            if local.exists():
                self.cache[key] = json.loads(local.read_text())
            else:
                try:
                    self.cache[key] = kv.schema_contents(f"{self.dir}/{name}", self.version)
                except FileNotFoundError:
                    self.cache[key] = None
        return self.cache[key]

    def errors(self, doc: dict) -> list[str]:
        schema = self.schema(str(doc.get("apiVersion")), str(doc.get("kind")))
        if schema is None:
            return [f"no schema for {doc.get('apiVersion')} {doc.get('kind')} "
                    f"in Kubernetes {self.version} or deploy/schemas/"]
        registry = Resource.from_contents(schema) @ self.registry
        validator = jsonschema.Draft202012Validator(schema, registry=registry)
        out = []
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path))):
            path = ".".join(str(p) for p in e.path) or "(top)"
            out.append(f"{path}: {e.message}")
        return out


# ---------------------------------------------------------------- helpers

def pod_spec(doc: dict) -> dict | None:
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind in {"Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"}:
        return (spec.get("template") or {}).get("spec") or {}
    if kind == "CronJob":
        return (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    return None


def pod_labels(doc: dict) -> dict:
    if doc.get("kind") == "Pod":
        return (doc.get("metadata") or {}).get("labels") or {}
    return (((doc.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


def containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def container(spec: dict, name: str) -> dict | None:
    return next((c for c in containers(spec) if c.get("name") == name), None)


def check_params(where: str, params: dict, keys: set[str], patterns, report: Report,
                 case_insensitive: bool) -> None:
    for key, value in (params or {}).items():
        if not isinstance(value, str):
            report.fail(where, f"parameter {key!r} must be a string, got {value!r}")
        k = key.lower() if case_insensitive else key
        if SIDECAR_SECRET_KEY.match(key):
            continue
        if k in keys or any(p.match(k) for p in patterns):
            continue
        report.fail(where, f"parameter {key!r} is not one the driver accepts "
                           f"(it would fail with InvalidArgument); see docs/parameters.md")


# ---------------------------------------------------------------- generic checks

def check_handlers(where: str, c: dict, report: Report) -> None:
    """Probes and lifecycle hooks: one handler each (the API server rejects
    more), and named ports that the container declares."""
    names = {p.get("name") for p in c.get("ports") or [] if p.get("name")}
    handlers = [(k, c.get(k), PROBE_HANDLERS) for k in PROBES if c.get(k)]
    handlers += [(f"lifecycle.{k}", v, HOOK_HANDLERS)
                 for k, v in (c.get("lifecycle") or {}).items() if v]
    for what, h, kinds in handlers:
        used = sorted(k for k in kinds if k in h)
        if len(used) != 1:
            report.fail(where, f"container {c.get('name')}: {what} needs exactly one handler "
                               f"of {sorted(kinds)}, has {used}")
        for k in ("httpGet", "tcpSocket", "grpc"):
            port = (h.get(k) or {}).get("port")
            if isinstance(port, str) and not port.isdigit() and port not in names:
                report.fail(where, f"container {c.get('name')}: {what} uses port {port!r}, "
                                   f"which the container does not declare (has {sorted(names)})")


def check_group(name: str, docs: list[tuple[str, dict]], report: Report) -> None:
    seen: dict[str, str] = {}
    classes = {"StorageClass": set(), "VolumeSnapshotClass": set(), "VolumeAttributesClass": set()}
    pvcs, snapshots = set(), set()
    for src, doc in docs:
        where = f"{src}: {ident(doc)}"
        kind = doc.get("kind")
        md = doc.get("metadata") or {}
        if kind in CLUSTER_SCOPED and md.get("namespace"):
            report.fail(where, f"{kind} is cluster-scoped but has namespace {md['namespace']!r}")
        key = ident(doc)
        if key in seen:
            report.fail(where, f"defined twice (also in {seen[key]})")
        seen[key] = src
        if kind in classes:
            classes[kind].add(md.get("name"))
        ns = md.get("namespace", "default")
        if kind == "PersistentVolumeClaim":
            pvcs.add((ns, md.get("name")))
        if kind == "VolumeSnapshot":
            snapshots.add((ns, md.get("name")))
        spec = pod_spec(doc)
        if spec is not None:
            for c in containers(spec):
                image = str(c.get("image", ""))
                last = image.rsplit("/", 1)[-1]
                if "@sha256:" not in image and (":" not in last or last.endswith(":latest")):
                    report.fail(where, f"container {c.get('name')}: image {image!r} needs an explicit version tag")
                check_handlers(where, c, report)
        # Parameters of our driver's classes.
        if kind == "StorageClass" and doc.get("provisioner") == DRIVER:
            check_params(where, doc.get("parameters"), SC_KEYS, SC_PATTERNS, report, True)
        if kind == "VolumeSnapshotClass" and doc.get("driver") == DRIVER:
            check_params(where, doc.get("parameters"), VSC_KEYS, VSC_PATTERNS, report, True)
        if kind == "VolumeAttributesClass" and doc.get("driverName") == DRIVER:
            check_params(where, doc.get("parameters"), VAC_KEYS, VAC_PATTERNS, report, True)

    # References between objects of the group (only when the group defines
    # that kind of class at all: a chart need not ship a StorageClass).
    def want(where: str, kind: str, value) -> None:
        if value and classes[kind] and value not in classes[kind]:
            report.fail(where, f"refers to {kind} {value!r}, which this group does not define "
                               f"(has {sorted(classes[kind])})")

    for src, doc in docs:
        where = f"{src}: {ident(doc)}"
        kind = doc.get("kind")
        ns = (doc.get("metadata") or {}).get("namespace", "default")
        claims = []
        if kind == "PersistentVolumeClaim":
            claims.append(doc.get("spec") or {})
        if kind == "StatefulSet":
            claims += [(t.get("spec") or {}) for t in (doc.get("spec") or {}).get("volumeClaimTemplates") or []]
        for claim in claims:
            want(where, "StorageClass", claim.get("storageClassName"))
            want(where, "VolumeAttributesClass", claim.get("volumeAttributesClassName"))
            source = claim.get("dataSource") or claim.get("dataSourceRef")
            if source:
                skind, sname = source.get("kind"), source.get("name")
                if skind == "VolumeSnapshot" and (ns, sname) not in snapshots:
                    report.fail(where, f"restores from VolumeSnapshot {ns}/{sname}, not defined in the group")
                if skind == "PersistentVolumeClaim" and (ns, sname) not in pvcs:
                    report.fail(where, f"clones PersistentVolumeClaim {ns}/{sname}, not defined in the group")
        if kind == "VolumeSnapshot":
            spec = doc.get("spec") or {}
            want(where, "VolumeSnapshotClass", spec.get("volumeSnapshotClassName"))
            pvc = (spec.get("source") or {}).get("persistentVolumeClaimName")
            if pvc and (ns, pvc) not in pvcs:
                report.fail(where, f"snapshots PersistentVolumeClaim {ns}/{pvc}, not defined in the group")


# ---------------------------------------------------------------- driver checks

def plugin_workloads(by_kind: dict, mode: str) -> list[dict]:
    out = []
    for kind in ("Deployment", "DaemonSet", "StatefulSet"):
        for d in by_kind.get(kind, []):
            c = container(pod_spec(d), "ebs-plugin")
            if c and mode in [str(a) for a in c.get("args") or []]:
                out.append(d)
    return out


class Driver:
    """What the driver binary accepts (src/options.rs) and where the image has it."""

    def __init__(self, options_rs: Path, dockerfile: Path) -> None:
        self.longs, self.shorts = driver_flags(options_rs)
        self.modes = driver_modes(options_rs)
        self.binary = entrypoint(dockerfile)


def driver_modes(options_rs: Path) -> set[str]:
    """The positional modes: variants of `enum Mode`, kebab-cased as clap does."""
    body = re.search(r"pub enum Mode\s*\{(.*?)\n\}", options_rs.read_text(), re.S)
    if not body:
        raise SystemExit(f"{options_rs}: no `pub enum Mode`")
    variants = re.findall(r"^\s*([A-Z]\w*)\s*,", body.group(1), re.M)
    return {re.sub(r"(?<!^)([A-Z])", r"-\1", v).lower() for v in variants}


def entrypoint(dockerfile: Path) -> str:
    """The program the image's (last) ENTRYPOINT runs."""
    found = re.findall(r"^ENTRYPOINT\s+(.+)$", dockerfile.read_text(), re.M)
    if not found:
        raise SystemExit(f"{dockerfile}: no ENTRYPOINT")
    try:
        return json.loads(found[-1])[0]
    except (ValueError, IndexError):
        return found[-1].split()[0]


def driver_flags(options_rs: Path) -> tuple[set[str], set[str]]:
    """Long and short flag names clap derives from src/options.rs."""
    text = options_rs.read_text()
    longs, shorts = {"help", "version"}, {"h", "V"}
    for attrs, field in re.findall(r"#\[arg\(([^\]]*)\)\]\s*(?:///[^\n]*\n\s*)*pub (\w+):", text):
        if not re.search(r"\blong\b", attrs) and not re.search(r"\bshort\b", attrs):
            continue  # positional
        explicit = re.search(r'long\s*=\s*"([^"]+)"', attrs)
        if re.search(r"\blong\b", attrs):
            longs.add(explicit.group(1) if explicit else field.replace("_", "-"))
        for alias in re.findall(r'(?:visible_)?alias\s*=\s*"([^"]+)"', attrs):
            longs.add(alias)
        short = re.search(r"short\s*=\s*'(.)'", attrs)
        if short:
            shorts.add(short.group(1))
        elif re.search(r"\bshort\b(?!\s*=)", attrs):
            shorts.add(field[0])
    return longs, shorts


def check_driver_args(where: str, c: dict, mode: str, driver: Driver, report: Report) -> None:
    longs, shorts = driver.longs, driver.shorts
    args = [str(a) for a in (c.get("args") or [])]
    modes = [a for a in args if not a.startswith("-")]
    if modes != [mode]:
        report.fail(where, f"driver args must name the mode {mode!r} once, got {modes}")
    for a in args:
        if a.startswith("--"):
            name = a[2:].split("=", 1)[0]
            if name not in longs:
                report.fail(where, f"driver flag --{name} is not defined in src/options.rs")
        elif a.startswith("-"):
            name = a[1:].split("=", 1)[0]
            if name not in shorts:
                report.fail(where, f"driver flag -{name} is not defined in src/options.rs")


def arg_value(c: dict, flag: str) -> str | None:
    for a in c.get("args") or []:
        a = str(a)
        if a == flag:
            return "true"
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def env_value(c: dict, name: str) -> str | None:
    for e in c.get("env") or []:
        if e.get("name") == name:
            return e.get("value")
    return None


def has_driver(docs: list[tuple[str, dict]]) -> bool:
    for _, d in docs:
        if d.get("kind") == "CSIDriver" or (pod_spec(d) is not None and container(pod_spec(d), "ebs-plugin")):
            return True
    return False


def bound_rules(by_kind: dict, ns: str | None, sa: str) -> list[dict]:
    """Every RBAC rule granted to ServiceAccount ns/sa by the group's bindings."""
    croles = {d["metadata"]["name"]: d.get("rules") or [] for d in by_kind.get("ClusterRole", [])}
    roles = {(d["metadata"].get("namespace"), d["metadata"]["name"]): d.get("rules") or []
             for d in by_kind.get("Role", [])}
    out: list[dict] = []
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for b in by_kind.get(kind, []):
            bns = b["metadata"].get("namespace")
            if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa
                       and (s.get("namespace") or bns) == ns for s in b.get("subjects") or []):
                continue
            ref = b.get("roleRef") or {}
            if ref.get("kind") == "ClusterRole":
                out += croles.get(ref.get("name"), [])
            else:
                out += roles.get((bns, ref.get("name")), [])
    return out


def rule_grants(rules: list[dict]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for r in rules:
        for g in r.get("apiGroups") or [""]:
            for res in r.get("resources") or []:
                grants.setdefault((g, res), set()).update(r.get("verbs") or [])
        for url in r.get("nonResourceURLs") or []:
            grants.setdefault(("nonResourceURL", url), set()).update(r.get("verbs") or [])
    return grants


def check_driver(name: str, docs: list[tuple[str, dict]], driver: Driver, report: Report, strict: bool) -> None:
    """Driver installation checks. strict (a complete --bundle) adds the
    defaults issue 8 requires, which a values file may turn off on purpose:
    every sidecar and its flags, tolerating all taints, service accounts
    defined in the bundle."""
    by_kind: dict[str, list[dict]] = {}
    for _, d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    where = f"{name}"

    drivers = [d for d in by_kind.get("CSIDriver", []) if d["metadata"].get("name") == DRIVER]
    controllers, nodes = plugin_workloads(by_kind, "controller"), plugin_workloads(by_kind, "node")
    # nodeComponentOnly: node DaemonSets, no controller, no CSIDriver.
    node_only = not strict and nodes and not controllers and not drivers
    if len(drivers) != 1 and not node_only:
        report.fail(where, f"expected one CSIDriver {DRIVER}, found {len(drivers)}")
    elif drivers:
        spec = drivers[0].get("spec") or {}
        for k, v in {"attachRequired": True, "podInfoOnMount": False, "fsGroupPolicy": "File"}.items():
            # Without strict, fsGroupPolicy may be left out (useOldCSIDriver).
            if spec.get(k) != v and (strict or k != "fsGroupPolicy" or k in spec):
                report.fail(where, f"CSIDriver spec.{k} must be {v!r}, is {spec.get(k)!r}")

    if (len(controllers) != 1 or controllers[0]["kind"] != "Deployment") and not node_only:
        report.fail(where, f"expected one controller Deployment, found {[ident(d) for d in controllers]}")
    if not nodes or any(d["kind"] != "DaemonSet" for d in nodes):
        report.fail(where, f"expected node DaemonSet(s), found {[ident(d) for d in nodes]}")

    for d in controllers:
        w = f"{name}: {ident(d)}"
        spec = pod_spec(d)
        psc = spec.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True:
            report.fail(w, "controller pod must set securityContext.runAsNonRoot: true")
        if psc.get("runAsUser") == 0:
            report.fail(w, "controller pod must not run as uid 0")
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            report.fail(w, "controller pod must not use host namespaces")
        for v in spec.get("volumes") or []:
            if "hostPath" in v:
                report.fail(w, f"controller volume {v.get('name')} is a hostPath")
        for c in containers(spec):
            sc = c.get("securityContext") or {}
            if sc.get("privileged"):
                report.fail(w, f"controller container {c['name']} is privileged")
            if sc.get("readOnlyRootFilesystem") is not True:
                report.fail(w, f"controller container {c['name']} needs readOnlyRootFilesystem: true")
            if sc.get("allowPrivilegeEscalation") is not False:
                report.fail(w, f"controller container {c['name']} needs allowPrivilegeEscalation: false")
            if not (c.get("resources") or {}).get("requests"):
                report.fail(w, f"controller container {c['name']} has no resource requests")
        plugin = container(spec, "ebs-plugin")
        check_driver_args(w, plugin, "controller", driver, report)
        needed = {
            "csi-provisioner": ["--feature-gates=Topology=true", "--extra-create-metadata", "--leader-election"],
            "csi-attacher": ["--leader-election"],
            "csi-snapshotter": ["--extra-create-metadata", "--leader-election"],
            "csi-resizer": ["--leader-election"],
            "liveness-probe": [],
        }
        for sidecar, args in (needed.items() if strict else ()):
            c = container(spec, sidecar)
            if c is None:
                report.fail(w, f"controller has no {sidecar} container")
                continue
            for a in args:
                if "=" in a:
                    flag, val = a.split("=", 1)
                    got = arg_value(c, flag)
                    if got is None or val not in got.split(","):
                        report.fail(w, f"{sidecar} needs {a}")
                elif arg_value(c, a) != "true":
                    report.fail(w, f"{sidecar} needs {a} (=true)")
        socket = env_value(plugin, "CSI_ENDPOINT") or ""
        for c in containers(spec):
            addr = env_value(c, "ADDRESS")
            if addr and not socket.endswith(addr):
                report.fail(w, f"{c['name']} talks to {addr} but the driver listens on {socket}")

    for d in nodes:
        w = f"{name}: {ident(d)}"
        spec = pod_spec(d)
        plugin = container(spec, "ebs-plugin")
        check_driver_args(w, plugin, "node", driver, report)
        if not (plugin.get("securityContext") or {}).get("privileged"):
            report.fail(w, "node ebs-plugin must be privileged")
        # The node's name, for its Node object and the preStop hook.
        node_name = next((e for e in plugin.get("env") or [] if e.get("name") == "CSI_NODE_NAME"), None)
        field = (((node_name or {}).get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if field != "spec.nodeName":
            report.fail(w, "node ebs-plugin needs env CSI_NODE_NAME from fieldRef spec.nodeName")
        # preStop: the image's binary in mode pre-stop-hook, with time to finish.
        hook = ((plugin.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}
        want = [driver.binary, "pre-stop-hook"]
        if "pre-stop-hook" not in driver.modes:
            report.fail(w, f"src/options.rs has no mode pre-stop-hook (modes: {sorted(driver.modes)})")
        if [str(a) for a in hook.get("command") or []] != want:
            report.fail(w, f"node ebs-plugin preStop must exec {want} (the Dockerfile's ENTRYPOINT), "
                           f"is {hook.get('command')}")
        grace = spec.get("terminationGracePeriodSeconds")
        if not isinstance(grace, int) or grace < 1:
            report.fail(w, f"node pods need terminationGracePeriodSeconds for the preStop hook, is {grace!r}")
        if spec.get("priorityClassName") != "system-node-critical":
            report.fail(w, "node pods need priorityClassName system-node-critical")
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        host = {n: (v.get("hostPath") or {}).get("path", "").rstrip("/") for n, v in volumes.items()}
        mounts = {m["mountPath"].rstrip("/"): m for m in plugin.get("volumeMounts") or []}
        kubelet = next((m for m in mounts.values()
                        if m.get("mountPropagation") == "Bidirectional"), None)
        if kubelet is None:
            report.fail(w, "node ebs-plugin has no Bidirectional mount (the kubelet dir)")
            kubelet_dir = "/var/lib/kubelet"
        else:
            kubelet_dir = host.get(kubelet["name"], "")
            if kubelet["mountPath"].rstrip("/") != kubelet_dir:
                report.fail(w, f"kubelet dir {kubelet_dir} must be mounted at the same path, "
                               f"is at {kubelet['mountPath']}")
        if "/dev" not in mounts or host.get(mounts["/dev"]["name"]) != "/dev":
            report.fail(w, "node ebs-plugin must mount the host's /dev at /dev")
        plugin_dir = f"{kubelet_dir}/plugins/{DRIVER}"
        socket = (env_value(plugin, "CSI_ENDPOINT") or "").removeprefix("unix://").removeprefix("unix:")
        sock_dir = socket.rsplit("/", 1)[0] or "/"
        m = mounts.get(sock_dir)
        if m is None or host.get(m["name"]) != plugin_dir:
            report.fail(w, f"driver socket {socket} must be in a mount of the host's {plugin_dir}")
        reg = container(spec, "node-driver-registrar")
        if reg is None:
            report.fail(w, "node has no node-driver-registrar")
        else:
            reg_path = env_value(reg, "DRIVER_REG_SOCK_PATH") or arg_value(reg, "--kubelet-registration-path")
            if reg_path != f"{plugin_dir}/{socket.rsplit('/', 1)[-1]}":
                report.fail(w, f"registrar announces {reg_path}, but the driver socket is "
                               f"{plugin_dir}/{socket.rsplit('/', 1)[-1]} on the host")
            reg_mounts = {mm["mountPath"].rstrip("/"): mm for mm in reg.get("volumeMounts") or []}
            r = reg_mounts.get("/registration")
            if r is None or host.get(r["name"]) != f"{kubelet_dir}/plugins_registry":
                report.fail(w, f"registrar must mount {kubelet_dir}/plugins_registry at /registration")
        if container(spec, "liveness-probe") is None:
            report.fail(w, "node has no liveness-probe")
        tolerations = spec.get("tolerations") or []
        if strict and not any(t.get("operator") == "Exists" and not t.get("key") and not t.get("effect")
                   for t in tolerations):
            report.fail(w, "node pods must tolerate every taint (operator: Exists)")

    # RBAC and service accounts resolve.
    sas = {(d["metadata"].get("namespace"), d["metadata"]["name"]) for d in by_kind.get("ServiceAccount", [])}
    croles = {d["metadata"]["name"] for d in by_kind.get("ClusterRole", [])}
    roles = {(d["metadata"].get("namespace"), d["metadata"]["name"]) for d in by_kind.get("Role", [])}
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for b in by_kind.get(kind, []):
            w = f"{name}: {ident(b)}"
            ref = b.get("roleRef") or {}
            ns = b["metadata"].get("namespace")
            if ref.get("kind") == "ClusterRole" and ref.get("name") not in croles:
                report.fail(w, f"binds missing ClusterRole {ref.get('name')}")
            if ref.get("kind") == "Role" and (ns, ref.get("name")) not in roles:
                report.fail(w, f"binds missing Role {ns}/{ref.get('name')}")
            for s in b.get("subjects") or []:
                if strict and s.get("kind") == "ServiceAccount" and (s.get("namespace"), s.get("name")) not in sas:
                    report.fail(w, f"binds missing ServiceAccount {s.get('namespace')}/{s.get('name')}")
    for d in controllers + nodes:
        sa = pod_spec(d).get("serviceAccountName")
        if strict and (d["metadata"].get("namespace"), sa) not in sas:
            report.fail(f"{name}: {ident(d)}", f"uses ServiceAccount {sa} the bundle does not define")
    # The node plugin's account: NODE_RULES at most (exactly, in a bundle).
    for d in nodes:
        ns, sa = d["metadata"].get("namespace"), pod_spec(d).get("serviceAccountName")
        grants = rule_grants(bound_rules(by_kind, ns, sa))
        w = f"{name}: {ident(d)}: ServiceAccount {sa}"
        for key, verbs in sorted(grants.items()):
            extra = verbs - NODE_RULES.get(key, set())
            if extra:
                report.fail(w, f"may {sorted(extra)} {key[1]} ({key[0] or 'core'}), beyond the node's "
                               f"needs {sorted(NODE_RULES.get(key, set()))}")
        if strict:
            for key, verbs in sorted(NODE_RULES.items()):
                missing = verbs - grants.get(key, set())
                if missing:
                    report.fail(w, f"lacks {sorted(missing)} on {key[1]} ({key[0] or 'core'})")

    # Services select a workload and target ports its containers declare.
    workloads = [d for k in ("Deployment", "DaemonSet", "StatefulSet") for d in by_kind.get(k, [])]
    for svc in by_kind.get("Service", []):
        w = f"{name}: {ident(svc)}"
        sel = (svc.get("spec") or {}).get("selector") or {}
        targets = [d for d in workloads
                   if sel and all(pod_labels(d).get(k) == v for k, v in sel.items())]
        if not targets:
            report.fail(w, f"selector {sel} matches no workload")
        for p in (svc.get("spec") or {}).get("ports") or []:
            tp = p.get("targetPort", p.get("port"))
            for d in targets:
                ports = [cp for c in containers(pod_spec(d)) for cp in c.get("ports") or []]
                if not any(cp.get("name") == tp or cp.get("containerPort") == tp for cp in ports):
                    report.fail(w, f"targetPort {tp} is not a port of {ident(d)}")
    # A driver serving metrics declares the port it listens on.
    for d in controllers + nodes:
        plugin = container(pod_spec(d), "ebs-plugin")
        ep = arg_value(plugin, "--http-endpoint")
        if ep:
            port = int(ep.rsplit(":", 1)[1])
            if not any(cp.get("containerPort") == port for cp in plugin.get("ports") or []):
                report.fail(f"{name}: {ident(d)}", f"--http-endpoint={ep} but no containerPort {port}")


# ---------------------------------------------------------------- main

def load(path: Path, report: Report) -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        report.fail(str(path), f"not YAML: {e}")
        return []
    out = []
    for d in docs:
        if d.get("kind", "").endswith("List") and "items" in d:
            out.extend(d["items"])
        else:
            out.append(d)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kube-version", action="append", required=True)
    ap.add_argument("--options", type=Path, default=Path("src/options.rs"))
    ap.add_argument("--dockerfile", type=Path, default=Path("Dockerfile"))
    argv = sys.argv[1:]
    starts = [i for i, t in enumerate(argv) if t in ("--group", "--bundle")]
    cut = starts[0] if starts else len(argv)
    a = ap.parse_args(argv[:cut])

    groups: list[tuple[str, bool, list[Path]]] = []
    it = iter(argv[cut:])
    for tok in it:
        if tok in ("--group", "--bundle"):
            groups.append((next(it), tok == "--bundle", []))
        else:
            groups[-1][2].append(Path(tok))
    if not groups:
        ap.error("nothing to check: give --group NAME FILE... or --bundle NAME FILE...")

    driver = Driver(a.options, a.dockerfile)
    schemas = [Schemas(v) for v in a.kube_version]
    report = Report()
    for name, is_bundle, files in groups:
        docs = [(str(f), d) for f in files for d in load(f, report)]
        if not docs:
            report.fail(name, "no objects")
        for src, doc in docs:
            if not isinstance(doc, dict) or not doc.get("kind") or not doc.get("apiVersion"):
                report.fail(src, f"not a Kubernetes object: {str(doc)[:80]}")
                continue
            for s in schemas:
                for err in s.errors(doc):
                    report.fail(f"{src}: {ident(doc)} [k8s {kv.major_minor(s.version)}]", err)
        good = [(s, d) for s, d in docs if isinstance(d, dict) and d.get("kind")]
        check_group(name, good, report)
        if is_bundle or has_driver(good):
            check_driver(name, good, driver, report, strict=is_bundle)
        kinds: dict[str, int] = {}
        for _, d in good:
            kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        print(f"  {name}: {len(good)} objects ({summary})")

    versions = ", ".join(kv.major_minor(s.version) for s in schemas)
    if report.errors:
        print(f"FAILED: {len(report.errors)} problem(s) (Kubernetes {versions}):", file=sys.stderr)
        for e in report.errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    print(f"  all objects valid against Kubernetes {versions} (strict) and the driver checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
