#!/usr/bin/env python3
"""Generates src/contract/attach_limits.tsv from the reference driver's Go tables.

The reference driver (kubernetes-sigs/aws-ebs-csi-driver) keeps EC2-derived
EBS attachment facts in two Go files:

  pkg/cloud/limits/volume_limits_table.go  (generated there from EC2
      DescribeInstanceTypes): `nonNitroInstanceTypes` (a set), `volumeLimits`
      ("type": {N, "shared"|"dedicated"}) and `ebsCardCounts` ("type": N);
  pkg/cloud/limits/volume_limits.go: `dedicatedInstances` (types EC2 reports
      as shared that are dedicated) and GetVolumeLimits/GetCardCount, which
      give non-Nitro types 39 dedicated, every unlisted type 27 shared and
      every type without a card count 1 card.

This script applies exactly those rules and writes one row per instance type
in the union of the three table maps, sorted by type. The Go text is parsed
with strict line regexes: any line inside a map that is not an entry, a
comment or blank, a duplicate key, a missing map, or a change of the default
numbers in volume_limits.go is an error (exit 2), so a refresh against a
changed upstream fails loudly instead of writing a wrong table.

Usage:
  attach_limits.py --repo PATH --ref v1.64.0 [--output FILE] [--check]
      PATH is a git checkout or bare mirror; files are read with `git show REF:path`.
  attach_limits.py --from-files TABLE_GO LIMITS_GO --ref v1.64.0 [--output FILE] [--check]
      plain files; --ref only names the source in the header.
--check writes nothing: it exits 1 (with a diff summary) when FILE differs
from what would be written, 0 when it is up to date.
Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

TABLE_GO = "pkg/cloud/limits/volume_limits_table.go"
LIMITS_GO = "pkg/cloud/limits/volume_limits.go"
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "src" / "contract" / "attach_limits.tsv"

NON_NITRO_LIMIT = 39
DEFAULT_LIMIT = 27
DEFAULT_CARDS = 1
SHARED, DEDICATED = "shared", "dedicated"

TYPE_RE = r"[a-z0-9][a-z0-9-]*\.[a-z0-9][a-z0-9-]*"
MAP_START_RE = re.compile(r"^var\s+(\w+)\s*=\s*map\[string\]([\w{}]+)\s*\{\s*$")
END = r"\s*,\s*(//.*)?$"  # every entry ends with a comma, optionally a line comment
SET_ENTRY_RE = re.compile(rf'^\s*"({TYPE_RE})"\s*:\s*\{{\s*\}}{END}')
LIMIT_ENTRY_RE = re.compile(rf'^\s*"({TYPE_RE})"\s*:\s*\{{\s*(\d+)\s*,\s*"(shared|dedicated)"\s*\}}{END}')
INT_ENTRY_RE = re.compile(rf'^\s*"({TYPE_RE})"\s*:\s*(\d+){END}')
IGNORABLE_RE = re.compile(r"^\s*(//.*)?$")

# The value type each map must have, and the entry regex for it.
MAP_KINDS = {
    "struct{}": SET_ENTRY_RE,
    "volumeLimit": LIMIT_ENTRY_RE,
    "int": INT_ENTRY_RE,
}


class ConvertError(Exception):
    """The Go source is not what this converter understands."""


def parse_go_maps(text: str, source: str) -> dict[str, dict[str, object]]:
    """Every top-level `var NAME = map[string]T{ ... }` literal in `text`.

    Sets map to {type: None}, volumeLimit maps to {type: (N, kind)}, int maps
    to {type: N}. Raises ConvertError naming the file and line of anything
    unexpected inside a map literal.
    """
    maps: dict[str, dict[str, object]] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = MAP_START_RE.match(lines[i])
        if not m:
            if re.match(r"^var\s+\w+\s*=\s*map\[", lines[i]):
                raise ConvertError(f"{source}:{i + 1}: map literal of an unknown form: {lines[i]!r}")
            i += 1
            continue
        name, value_type = m.group(1), m.group(2)
        entry_re = MAP_KINDS.get(value_type)
        if entry_re is None:
            raise ConvertError(f"{source}:{i + 1}: map {name} has unexpected value type {value_type!r}")
        if name in maps:
            raise ConvertError(f"{source}:{i + 1}: map {name} defined twice")
        entries: dict[str, object] = {}
        i += 1
        while True:
            if i >= len(lines):
                raise ConvertError(f"{source}: map {name} is not closed")
            line = lines[i]
            if line.strip() == "}":
                break
            e = entry_re.match(line)
            if e:
                key = e.group(1)
                if key in entries:
                    raise ConvertError(f"{source}:{i + 1}: duplicate key {key!r} in {name}")
                if value_type == "struct{}":
                    entries[key] = None
                elif value_type == "volumeLimit":
                    n = int(e.group(2))
                    if n < 1:
                        raise ConvertError(f"{source}:{i + 1}: {key} has a limit of {n}")
                    entries[key] = (n, e.group(3))
                else:
                    n = int(e.group(2))
                    if n < 1:
                        raise ConvertError(f"{source}:{i + 1}: {key} has {n} cards")
                    entries[key] = n
            elif not IGNORABLE_RE.match(line):
                raise ConvertError(f"{source}:{i + 1}: unexpected line in map {name}: {line!r}")
            i += 1
        if not entries:
            raise ConvertError(f"{source}: map {name} is empty")
        maps[name] = entries
        i += 1
    return maps


def _require(maps: dict[str, dict[str, object]], name: str, value_type: str, source: str) -> dict[str, object]:
    if name not in maps:
        raise ConvertError(f"{source}: map {name} (map[string]{value_type}) not found")
    sample = next(iter(maps[name].values()))
    want = {"struct{}": type(None), "volumeLimit": tuple, "int": int}[value_type]
    if not isinstance(sample, want):
        raise ConvertError(f"{source}: map {name} is not a map[string]{value_type}")
    return maps[name]


def _func_body(text: str, name: str, source: str) -> str:
    m = re.search(rf"^func {name}\(.*?^\}}$", text, re.S | re.M)
    if not m:
        raise ConvertError(f"{source}: func {name} not found")
    return m.group(0)


def _check_rules(limits_go: str, source: str) -> None:
    """GetVolumeLimits / GetCardCount still apply the rules and defaults this script assumes."""
    body = _func_body(limits_go, "GetVolumeLimits", source)
    returns = re.findall(r"\breturn\s+([^\n,]+?)\s*,\s*([^\n]+?)\s*$", body, re.M)
    want = [(str(NON_NITRO_LIMIT), "util.AttachmentDedicated"),
            ("limit.maxAttachments", "limit.attachmentType"),
            (str(DEFAULT_LIMIT), "util.AttachmentShared")]
    if returns != want:
        raise ConvertError(f"{source}: GetVolumeLimits returns {returns}, this script assumes {want}")
    order = [body.find("nonNitroInstanceTypes[instanceType]"), body.find("volumeLimits[instanceType]"),
             body.find("dedicatedInstances[instanceType]")]
    if -1 in order or order != sorted(order):
        raise ConvertError(f"{source}: GetVolumeLimits no longer checks nonNitro, volumeLimits, "
                           "dedicatedInstances in that order")
    if not re.search(r"limit\.attachmentType\s*=\s*util\.AttachmentDedicated", body):
        raise ConvertError(f"{source}: the dedicatedInstances override no longer sets dedicated")
    cards = re.findall(r"\breturn\s+(\S+)\s*$", _func_body(limits_go, "GetCardCount", source), re.M)
    if cards != ["count", str(DEFAULT_CARDS)]:
        raise ConvertError(f"{source}: GetCardCount returns {cards}, this script assumes ['count', '{DEFAULT_CARDS}']")


def build_rows(table_go: str, limits_go: str, *, table_src: str = TABLE_GO,
               limits_src: str = LIMITS_GO) -> list[tuple[str, int, str, int]]:
    """(instance_type, max_ebs_attachments, limit_type, ebs_cards), sorted by type."""
    tmaps = parse_go_maps(table_go, table_src)
    lmaps = parse_go_maps(limits_go, limits_src)
    non_nitro = _require(tmaps, "nonNitroInstanceTypes", "struct{}", table_src)
    volume_limits = _require(tmaps, "volumeLimits", "volumeLimit", table_src)
    cards = _require(tmaps, "ebsCardCounts", "int", table_src)
    dedicated = _require(lmaps, "dedicatedInstances", "struct{}", limits_src)
    _check_rules(limits_go, limits_src)
    for maps, known, src in ((tmaps, {"nonNitroInstanceTypes", "volumeLimits", "ebsCardCounts"}, table_src),
                             (lmaps, {"dedicatedInstances"}, limits_src)):
        if set(maps) - known:  # a new map may be a new rule this script does not apply
            raise ConvertError(f"{src}: unexpected maps {sorted(set(maps) - known)}")

    rows = []
    for name in sorted(set(non_nitro) | set(volume_limits) | set(cards)):
        if name in non_nitro:  # checked first, like GetVolumeLimits
            limit, kind = NON_NITRO_LIMIT, DEDICATED
        elif name in volume_limits:
            limit, kind = volume_limits[name]  # type: ignore[misc]
            if name in dedicated:
                kind = DEDICATED
        else:
            limit, kind = DEFAULT_LIMIT, SHARED
        rows.append((name, limit, kind, cards.get(name, DEFAULT_CARDS)))
    return rows  # type: ignore[return-value]


def render(rows: list[tuple[str, int, str, int]], ref: str) -> str:
    header = [
        "# EBS attachment facts per EC2 instance type. GENERATED by deploy/tools/attach_limits.py - do not edit.",
        f"# Source: kubernetes-sigs/aws-ebs-csi-driver {ref}, {TABLE_GO}",
        "#   (generated there from EC2 DescribeInstanceTypes: MaximumEbsAttachments, AttachmentLimitType,",
        f"#   MaximumEbsCards) with the overrides of {LIMITS_GO} (dedicatedInstances;",
        f"#   non-Nitro types count as {NON_NITRO_LIMIT} dedicated).",
        "# Refresh: python3 deploy/tools/attach_limits.py --repo <checkout of aws-ebs-csi-driver> --ref <tag>",
        "# Columns: instance_type, max_ebs_attachments, limit_type (shared|dedicated), ebs_cards.",
        f"# Types not listed have the default Nitro limit: {DEFAULT_LIMIT} attachments, shared, {DEFAULT_CARDS} card.",
    ]
    body = [f"{t}\t{n}\t{k}\t{c}" for t, n, k, c in rows]
    return "\n".join(header + body) + "\n"


def git_show(repo: str, ref: str, path: str) -> str:
    try:
        out = subprocess.run(["git", "-C", repo, "show", f"{ref}:{path}"], capture_output=True, check=False)
    except OSError as e:
        raise ConvertError(f"cannot run git: {e}") from e
    if out.returncode != 0:
        raise ConvertError(f"git show {ref}:{path} in {repo} failed: {out.stderr.decode(errors='replace').strip()}")
    return out.stdout.decode()


def generate(args: argparse.Namespace) -> str:
    if args.repo:
        table_go = git_show(args.repo, args.ref, TABLE_GO)
        limits_go = git_show(args.repo, args.ref, LIMITS_GO)
        rows = build_rows(table_go, limits_go, table_src=f"{args.ref}:{TABLE_GO}", limits_src=f"{args.ref}:{LIMITS_GO}")
    else:
        table_path, limits_path = args.from_files
        try:
            table_go = Path(table_path).read_text()
            limits_go = Path(limits_path).read_text()
        except OSError as e:
            raise ConvertError(str(e)) from e
        rows = build_rows(table_go, limits_go, table_src=table_path, limits_src=limits_path)
    return render(rows, args.ref)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--repo", help="git checkout or mirror of kubernetes-sigs/aws-ebs-csi-driver")
    src.add_argument("--from-files", nargs=2, metavar=("TABLE_GO", "LIMITS_GO"),
                     help="volume_limits_table.go and volume_limits.go as plain files")
    p.add_argument("--ref", required=True, help="the reference driver's tag, e.g. v1.64.0 (named in the header)")
    p.add_argument("--output", default=str(DEFAULT_OUTPUT), help=f"default {DEFAULT_OUTPUT.relative_to(REPO_ROOT)}")
    p.add_argument("--check", action="store_true", help="exit 1 if --output differs from what would be written")
    args = p.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9._/-]+", args.ref):
        print(f"attach_limits.py: bad --ref {args.ref!r}", file=sys.stderr)
        return 2
    try:
        text = generate(args)
    except ConvertError as e:
        print(f"attach_limits.py: {e}", file=sys.stderr)
        return 2
    out = Path(args.output)
    rows = sum(1 for line in text.splitlines() if not line.startswith("#"))
    if args.check:
        try:
            current = out.read_text()
        except OSError as e:
            print(f"attach_limits.py: {out}: {e}", file=sys.stderr)
            return 1
        if current != text:
            old, new = set(current.splitlines()), set(text.splitlines())
            print(f"attach_limits.py: {out} is out of date ({len(old - new)} lines would go, "
                  f"{len(new - old)} would come); rerun without --check", file=sys.stderr)
            for line in sorted(old - new)[:10]:
                print(f"  - {line}", file=sys.stderr)
            for line in sorted(new - old)[:10]:
                print(f"  + {line}", file=sys.stderr)
            return 1
        print(f"{out}: up to date ({rows} types)")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out} ({rows} types)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
