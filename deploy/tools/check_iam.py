#!/usr/bin/env python3
"""Structural checks of docs/iam-policy.json and docs/iam-policy-optional.json.

Both parse as IAM policy documents (Version 2012-10-17, Allow statements with
unique Sids, explicit actions, no "*" action); the main policy grants exactly
the EC2 actions DESIGN.md's compatibility contract lists, and the optional one
grants none of those (it only adds). Whether the code calls only these actions
is the Rust test's job.

Usage: check_iam.py REPO_ROOT
"""

import json
import sys
from pathlib import Path

CONTRACT = {
    "CreateVolume", "DeleteVolume", "AttachVolume", "DetachVolume", "ModifyVolume",
    "CreateSnapshot", "DeleteSnapshot", "CreateTags", "DeleteTags",
    "DescribeAvailabilityZones", "DescribeInstances", "DescribeSnapshots",
    "DescribeTags", "DescribeVolumes", "DescribeVolumesModifications",
    "CopyVolumes",
}


def actions(path: Path, errors: list[str]) -> set[str]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        errors.append(f"{path}: {e}")
        return set()
    if doc.get("Version") != "2012-10-17":
        errors.append(f"{path}: Version must be 2012-10-17")
    out, sids = set(), set()
    for i, st in enumerate(doc.get("Statement", [])):
        where = f"{path}: statement {st.get('Sid', i)}"
        if st.get("Sid") in sids:
            errors.append(f"{where}: duplicate Sid")
        sids.add(st.get("Sid"))
        if st.get("Effect") != "Allow":
            errors.append(f"{where}: Effect must be Allow")
        if not st.get("Resource"):
            errors.append(f"{where}: no Resource")
        acts = st.get("Action")
        acts = [acts] if isinstance(acts, str) else acts or []
        for a in acts:
            if "*" in a and not a.startswith("kms:"):
                errors.append(f"{where}: wildcard action {a}")
            out.add(a)
        unknown = set(st) - {"Sid", "Effect", "Action", "Resource", "Condition"}
        if unknown:
            errors.append(f"{where}: unexpected keys {sorted(unknown)}")
    return out


def main() -> int:
    root = Path(sys.argv[1])
    errors: list[str] = []
    main_actions = actions(root / "docs/iam-policy.json", errors)
    optional = actions(root / "docs/iam-policy-optional.json", errors)
    ec2 = {a.removeprefix("ec2:") for a in main_actions if a.startswith("ec2:")}
    if main_actions - {f"ec2:{a}" for a in ec2}:
        errors.append(f"docs/iam-policy.json: non-EC2 actions {sorted(main_actions - {f'ec2:{a}' for a in ec2})}")
    if ec2 != CONTRACT:
        errors.append(f"docs/iam-policy.json: actions differ from the contract: "
                      f"missing {sorted(CONTRACT - ec2)}, extra {sorted(ec2 - CONTRACT)}")
    overlap = {a.removeprefix("ec2:") for a in optional} & CONTRACT
    if overlap:
        errors.append(f"docs/iam-policy-optional.json: repeats contract actions {sorted(overlap)}")
    if errors:
        print("FAILED (IAM policies):", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    print(f"  docs/iam-policy.json: the {len(ec2)} contract actions; "
          f"docs/iam-policy-optional.json adds {', '.join(sorted(optional))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
