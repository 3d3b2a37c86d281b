#!/usr/bin/env python3
"""Checks the Dockerfile without a Docker engine (deploy/check.sh runs it).

1. hadolint (from the venv) lints it.
2. The build context: every file the builder stage COPYs exists and is not
   excluded by .dockerignore, and so is every target path Cargo.toml names
   explicitly (cargo refuses to build when one is missing).
3. The binary: `cargo build --bin X` names a [[bin]] of Cargo.toml; the file
   the runtime stage copies from the builder is the one the builder installs
   from target/release/X; ENTRYPOINT runs the copied path.
4. The runtime tools: each program in the Dockerfile's `for tool in ...`
   check is shipped by one of the Debian packages it installs (dpkg -L on
   this Debian host, same release as the image), and every program the Rust
   source starts (`Command::new("...")` or the node's `run("...", …)`) is in that list.

Usage: check_dockerfile.py REPO_ROOT HADOLINT
       check_dockerfile.py REPO_ROOT --packages   (prints the runtime packages)
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path


def fail(errors: list[str], msg: str) -> None:
    errors.append(msg)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages(instrs):
    """[(name, [(instr, args)])] per FROM."""
    out = []
    for ins, args in instrs:
        if ins == "FROM":
            m = re.search(r"\bAS\s+(\S+)", args, re.I)
            out.append((m.group(1) if m else str(len(out)), []))
        elif out:
            out[-1][1].append((ins, args))
    return out


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins."""
    result = False
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.strip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(pre, p) for pre in prefixes):
            result = not neg
    return result


def runtime_packages(text: str) -> list[str]:
    runtime = stages(instructions(text))[-1][1]
    runs = " ".join(a for i, a in runtime if i == "RUN")
    m = re.search(r"apt-get install\s+(.*?)(&&|$)", runs)
    return [w for w in (m.group(1).split() if m else []) if not w.startswith("-")]


def main() -> int:
    root, hadolint = Path(sys.argv[1]).resolve(), sys.argv[2]
    dockerfile = root / "Dockerfile"
    errors: list[str] = []
    text = dockerfile.read_text()
    if hadolint == "--packages":
        print(" ".join(runtime_packages(text)))
        return 0

    # 1. lint
    r = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True)
    if r.returncode != 0:
        fail(errors, "hadolint:\n" + (r.stdout + r.stderr).strip())
    else:
        print("  hadolint: no findings")

    st = stages(instructions(text))
    if len(st) < 2:
        fail(errors, "expected a builder stage and a runtime stage")
        print("\n".join(errors), file=sys.stderr)
        return 1
    (bname, build), (_, runtime) = st[0], st[-1]

    # 2. build context
    ignore = []
    if (root / ".dockerignore").exists():
        ignore = [l.strip() for l in (root / ".dockerignore").read_text().splitlines()
                  if l.strip() and not l.strip().startswith("#")]
    else:
        fail(errors, "no .dockerignore: the whole work tree (target/, venvs) would be sent as context")
    copied: list[str] = []
    for ins, args in build:
        if ins != "COPY" or "--from" in args:
            continue
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        for src in words[:-1]:
            copied.append(src.rstrip("/"))
            if not (root / src).exists():
                fail(errors, f"COPY {src}: not in the repository")
            elif ignored(src.rstrip("/"), ignore):
                fail(errors, f"COPY {src}: excluded by .dockerignore")

    def in_context(rel: str) -> bool:
        return any(rel == c or rel.startswith(c + "/") for c in copied) and not ignored(rel, ignore)

    cargo = tomllib.loads((root / "Cargo.toml").read_text())
    explicit = []
    if isinstance(cargo.get("package", {}).get("build"), str):
        explicit.append(cargo["package"]["build"])
    elif (root / "build.rs").exists():
        explicit.append("build.rs")
    if "path" in cargo.get("lib", {}):
        explicit.append(cargo["lib"]["path"])
    for kind in ("bin", "test", "bench", "example"):
        explicit += [t["path"] for t in cargo.get(kind, []) if "path" in t]
    for rel in explicit:
        if not (root / rel).exists():
            fail(errors, f"Cargo.toml names {rel}, which does not exist")
        elif not in_context(rel):
            fail(errors, f"Cargo.toml names {rel}, which the builder stage does not COPY "
                         f"(cargo would refuse to build)")
    print(f"  build context: {', '.join(copied)}; Cargo targets present: {', '.join(explicit)}")

    # 3. binary
    bins = {b["name"] for b in cargo.get("bin", [])} or {cargo["package"]["name"]}
    build_runs = " ".join(a for i, a in build if i == "RUN")
    m = re.search(r"cargo build\b[^&;]*--bin\s+(\S+)", build_runs)
    if not m:
        fail(errors, "builder stage does not run `cargo build ... --bin NAME`")
        built = None
    else:
        built = m.group(1)
        if built not in bins:
            fail(errors, f"cargo build --bin {built}: Cargo.toml has bins {sorted(bins)}")
        if "--locked" not in build_runs:
            fail(errors, "cargo build must use --locked (Cargo.lock is the source of truth)")
    from_builder = [shlex.split(a) for i, a in runtime if i == "COPY" and f"--from={bname}" in a]
    if len(from_builder) != 1:
        fail(errors, f"runtime stage should COPY exactly one file from {bname}, found {len(from_builder)}")
    else:
        src, dst = from_builder[0][-2], from_builder[0][-1]
        if built and not re.search(rf"target/release/{re.escape(built)}\s+{re.escape(src)}(\s|$)", build_runs) \
                and src != f"/src/target/release/{built}":
            fail(errors, f"COPY --from={bname} {src}: the builder does not put target/release/{built} there")
        entry = next((a for i, a in runtime if i == "ENTRYPOINT"), "")
        if f'"{dst}"' not in entry:
            fail(errors, f"ENTRYPOINT {entry} does not run the copied binary {dst}")
        print(f"  binary: target/release/{built} -> {src} -> {dst} (ENTRYPOINT)")

    # 4. runtime tools
    runs = " ".join(a for i, a in runtime if i == "RUN")
    packages = runtime_packages(text)
    m = re.search(r"for tool in (.*?);", runs)
    tools = m.group(1).split() if m else []
    if not packages:
        fail(errors, "runtime stage installs no Debian packages")
    if not tools:
        fail(errors, "runtime stage has no `for tool in ...; do command -v` check")
    release = re.search(r"ARG DEBIAN_RELEASE=(\S+)", text)
    os_release = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    codename = re.search(r"^VERSION_CODENAME=(\S+)", os_release, re.M)
    if not release or not codename or release.group(1) != codename.group(1):
        fail(errors, f"this host is Debian {codename.group(1) if codename else '?'}, the image "
                     f"{release.group(1) if release else '?'}: cannot compare package contents")
    else:
        provided: dict[str, str] = {}
        for pkg in packages:
            r = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True)
            if r.returncode != 0:
                fail(errors, f"Debian package {pkg} is not installed on this host, so its contents "
                             f"cannot be checked (apt-get install {pkg})")
                continue
            for f in r.stdout.splitlines():
                if re.match(r"^(/usr)?/s?bin/[^/]+$", f):
                    provided.setdefault(os.path.basename(f), pkg)
        missing = [t for t in tools if t not in provided]
        for t in missing:
            fail(errors, f"{t}: no package the image installs ({' '.join(packages)}) ships it")
        print(f"  runtime tools: {len(tools) - len(missing)} of {len(tools)} shipped by "
              f"{' '.join(packages)} ({', '.join(f'{t}<{provided[t]}' for t in tools if t in provided)})")
    called = set()
    for rs in (root / "src").rglob("*.rs"):
        text = rs.read_text()
        # Programs started directly, and through the node's `run(prog, args)`.
        called |= set(re.findall(r'Command::new\(\s*"([^"/]+)"', text))
        called |= set(re.findall(r'(?<!::)\brun\(\s*"([^"/]+)"', text))
    for prog in sorted(called):
        if prog not in tools:
            fail(errors, f"src/ runs {prog!r}, which the Dockerfile's tool check does not list")
    print(f"  programs src/ starts: {', '.join(sorted(called)) or 'none yet'}")

    if errors:
        print("FAILED (Dockerfile):", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
