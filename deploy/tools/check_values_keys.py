#!/usr/bin/env python3
"""Checks Helm values files against the chart's key set, for deploy/check.sh.

Every key path of each --known file (maps are followed, lists are not: list
items are Kubernetes objects or class definitions) must be one the chart's
values.schema.json knows, following properties, additionalProperties,
patternProperties and local $refs. Names only: types are the schema's
business, which helm lint checks.

With --covers REFERENCE, every key path of REFERENCE (the reference chart's
values.yaml) must also appear in the --known file given with --complete, so
that file keeps mirroring the reference chart's whole key set.

Usage: check_values_keys.py --schema values.schema.json --known FILE...
                            [--complete FILE --covers REFERENCE_VALUES]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml


def key_paths(tree, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            path = prefix + (str(k),)
            out.append(path)
            out += key_paths(v, path)
    return out


def resolve(root: dict, node: dict) -> dict:
    seen = 0
    while isinstance(node, dict) and "$ref" in node and seen < 32:
        ref = node["$ref"]
        if not ref.startswith("#"):
            raise SystemExit(f"only local $refs are supported, got {ref!r}")
        target = root
        for part in filter(None, ref[1:].split("/")):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node, seen = target, seen + 1
    return node


def known(root: dict, path: tuple[str, ...]) -> bool:
    node = root
    for key in path:
        node = resolve(root, node)
        if not isinstance(node, dict):
            return True
        props = node.get("properties") or {}
        if key in props:
            node = props[key]
            continue
        pattern = next((s for p, s in (node.get("patternProperties") or {}).items()
                        if re.search(p, key)), None)
        if pattern is not None:
            node = pattern
            continue
        extra = node.get("additionalProperties", True)
        if extra is False:
            return False
        node = extra if isinstance(extra, dict) else {}
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schema", type=Path, required=True)
    ap.add_argument("--known", type=Path, nargs="+", required=True)
    ap.add_argument("--complete", type=Path)
    ap.add_argument("--covers", type=Path)
    a = ap.parse_args()
    schema = json.loads(a.schema.read_text())
    errors = []
    for f in a.known:
        paths = key_paths(yaml.safe_load(f.read_text()) or {})
        unknown = [".".join(p) for p in paths if not known(schema, p)]
        errors += [f"{f}: key {k} is not in {a.schema}" for k in unknown]
        print(f"  {f}: {len(paths)} key paths, {len(paths) - len(unknown)} known to {a.schema.name}")
    if a.covers:
        if not a.complete:
            ap.error("--covers needs --complete")
        ours = set(key_paths(yaml.safe_load(a.complete.read_text()) or {}))
        ref = key_paths(yaml.safe_load(a.covers.read_text()) or {})
        missing = [".".join(p) for p in ref if p not in ours]
        errors += [f"{a.complete}: lacks key {k} of {a.covers}" for k in missing]
        print(f"  {a.complete}: sets {len(ref) - len(missing)} of the {len(ref)} key paths of {a.covers}")
    if errors:
        print(f"FAILED: {len(errors)} problem(s):", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
