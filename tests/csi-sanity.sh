#!/usr/bin/env bash
# Runs the real csi-sanity (kubernetes-csi/csi-test) against the driver in
# `all` mode on the EC2 emulator with real loop devices, once per filesystem
# (xfs, then ext4), with the node attach-limit spec on. Fails on any failed
# spec; prints one summary line per filesystem.
#
#   bash tests/csi-sanity.sh [extra csi-sanity flags, e.g. --ginkgo.focus=Node]
#
# csi-sanity (v5.4.0, from the Go module proxy) is found as $CSI_SANITY, on
# PATH, or in $KUBE_BIN_DIR (what `bash tests/kube/build.sh` prints; it
# installs csi-sanity there). Without one this FAILS when CI is set (CI must
# run it) and says SKIP with how to get it otherwise. FILESYSTEMS="ext4"
# narrows the run; CSI_SANITY_KEEP=DIR keeps each run's logs and junit report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"

sanity="${CSI_SANITY:-}"
if [ -z "$sanity" ]; then
    if [ -n "${KUBE_BIN_DIR:-}" ] && [ -x "$KUBE_BIN_DIR/csi-sanity" ]; then
        sanity="$KUBE_BIN_DIR/csi-sanity"
    elif command -v csi-sanity >/dev/null; then
        sanity="$(command -v csi-sanity)"
    fi
fi
if [ -z "$sanity" ] || [ ! -x "$sanity" ]; then
    why="no csi-sanity binary (\$CSI_SANITY, \$KUBE_BIN_DIR, PATH); get it with"
    why="$why 'bash tests/kube/build.sh' or: go install github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@v5.4.0"
    if [ -n "${CI:-}" ]; then
        echo "FAIL csi-sanity: $why" >&2
        exit 1
    fi
    echo "SKIP csi-sanity: $why"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    if [ -n "${CI:-}" ]; then
        echo "FAIL csi-sanity: CI must run it, and it needs root for loop devices, mkfs and mount" >&2
        exit 1
    fi
    echo "SKIP csi-sanity: needs root for loop devices, mkfs and mount"
    exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/csi-sanity.XXXXXX")"
pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
cleanup() {
    stop_all
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# The binary the integration tests use (target/debug/ebs-csi-driver, built
# with the test build's features): after `cargo test` this builds nothing,
# where `cargo build --bin` would rebuild every dependency for the other
# feature set (tokio's test-util comes with the dev-dependencies): minutes.
cargo test --locked --quiet --no-run
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$ready" "$1"; }

# One run: a fresh emulator and driver, csi-sanity with test volumes of
# filesystem $1. Prints the summary; returns csi-sanity's status.
run_one() {
    local fs="$1"; shift
    local dir="$work/$fs"
    mkdir -p "$dir"
    mkfifo "$dir/ready"
    tests/ec2sim/run --delays fast >"$dir/ready" 2>"$dir/ec2sim.log" &
    pids+=("$!")
    read -r ready <"$dir/ready"
    local socket="$dir/csi.sock"
    AWS_ENDPOINT_URL_EC2="$(field endpoint)" AWS_EC2_METADATA_SERVICE_ENDPOINT="$(field imds_endpoint)" \
    AWS_REGION="$(field region)" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
    AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
        target/debug/ebs-csi-driver all --endpoint "unix://$socket" \
            --device-dir "$(field device_dir)" 2>"$dir/driver.log" &
    pids+=("$!")
    # Ready as Probe says it: the EC2 client and the instance identity are
    # set up in the background after the socket is bound (kubelet's
    # sidecars wait for Probe; csi-sanity does not).
    for _ in $(seq 300); do
        [ -S "$socket" ] && grep -q "EC2 client ready" "$dir/driver.log" \
            && grep -q "instance identity loaded" "$dir/driver.log" && break
        sleep 0.1
    done

    # The parameters the issue's users write in a StorageClass; the
    # filesystem reaches the node through the volume context because
    # csi-sanity's capabilities name none.
    cat >"$dir/params.yaml" <<YAML
type: gp3
iops: "3000"
throughput: "125"
encrypted: "true"
csi.storage.k8s.io/fstype: $fs
YAML
    local rc=0
    "$sanity" \
        --csi.endpoint="unix://$socket" \
        --csi.stagingdir="$dir/staging" \
        --csi.mountdir="$dir/mount" \
        --csi.testvolumesize=$((10 << 30)) \
        --csi.testvolumeexpandsize=$((11 << 30)) \
        --csi.testvolumeparameters="$dir/params.yaml" \
        --csi.testnodevolumeattachlimit \
        --ginkgo.junit-report="$dir/junit.xml" \
        "$@" >"$dir/sanity.log" 2>&1 || rc=$?
    python3 - "$dir/junit.xml" "$fs" "$rc" <<'PY' || true
import sys, xml.etree.ElementTree as ET
path, fs, rc = sys.argv[1:]
try:
    root = ET.parse(path).getroot()
except Exception as e:
    sys.exit(f"csi-sanity {fs}: exit {rc}, no junit report ({e})")
passed = failed = 0
skipped = {}
for case in root.iter("testcase"):
    s = case.find("skipped")
    if s is not None:
        why = (s.get("message") or "").replace("skipped - ", "").strip() or "skipped"
        skipped.setdefault(why, []).append(case.get("name", "?"))
    elif case.find("failure") is not None or case.find("error") is not None:
        failed += 1
    else:
        passed += 1
total_skipped = sum(len(v) for v in skipped.values())
print(f"csi-sanity {fs}: {passed} passed, {failed} failed, {total_skipped} skipped (exit {rc})")
for why, names in sorted(skipped.items()):
    print(f"  skipped {len(names)}: {why}")
PY
    # The volumes really got the filesystem asked for.
    if [ "$rc" = 0 ] && ! grep -qE "formatting empty device.*fs_type=\"?$fs\"?( |$)" "$dir/driver.log"; then
        echo "csi-sanity $fs: the driver never formatted a device as $fs" >&2
        rc=1
    fi
    if [ -n "${CSI_SANITY_KEEP:-}" ]; then
        mkdir -p "$CSI_SANITY_KEEP" && cp -r "$dir" "$CSI_SANITY_KEEP/"
    fi
    if [ "$rc" != 0 ]; then
        echo "csi-sanity $fs failed ($rc); its failures and the driver log:" >&2
        grep -E '^\s*\[FAIL\]|^\s*\[FAILED\]' "$dir/sanity.log" >&2 || tail -n 60 "$dir/sanity.log" >&2
        tail -n 80 "$dir/driver.log" >&2
    fi
    stop_all
    return "$rc"
}

status=0
for fs in ${FILESYSTEMS:-xfs ext4}; do
    run_one "$fs" "$@" || status=1
done
exit "$status"
