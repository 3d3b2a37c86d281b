#!/usr/bin/env bash
# Runs the real csi-sanity (kubernetes-csi/csi-test) against the driver in
# `all` mode on the EC2 emulator, with the flags our setup needs. Skips,
# saying so, when no csi-sanity binary is on PATH (it is a Go program and not
# in the registries CI can reach); tests/conformance.rs covers the same
# behaviours in Rust either way.
#
#   bash tests/csi-sanity.sh [extra csi-sanity flags, e.g. --ginkgo.focus=Node]
#
# Needs root (loop devices, mkfs, mount). Install csi-sanity with
#   go install github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@latest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v csi-sanity >/dev/null; then
    echo "SKIP csi-sanity: no csi-sanity binary on PATH (go install github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@latest); tests/conformance.rs covers its checks"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "SKIP csi-sanity: needs root for loop devices, mkfs and mount"
    exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/csi-sanity.XXXXXX")"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

cargo build --locked --quiet --bin ebs-csi-driver
mkfifo "$work/ready"
tests/ec2sim/run --delays fast >"$work/ready" &
pids+=("$!")
read -r ready <"$work/ready"
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$ready" "$1"; }
export AWS_ENDPOINT_URL_EC2="$(field endpoint)" AWS_EC2_METADATA_SERVICE_ENDPOINT="$(field imds_endpoint)"
export AWS_REGION="$(field region)" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null

socket="$work/csi.sock"
target/debug/ebs-csi-driver all --endpoint "unix://$socket" --device-dir "$(field device_dir)" \
    2>"$work/driver.log" &
pids+=("$!")
for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.1; done

cat >"$work/params.yaml" <<'YAML'
type: gp3
iops: "3000"
throughput: "125"
encrypted: "true"
YAML

# csi-sanity's default filesystem is ext4; online ext4 growth needs
# CAP_SYS_RESOURCE, which some machines (our CI) lack: NodeExpandVolume on a
# published ext4 volume then fails there, and says so.
rc=0
csi-sanity \
    --csi.endpoint="unix://$socket" \
    --csi.stagingdir="$work/staging" \
    --csi.mountdir="$work/mount" \
    --csi.testvolumesize=$((10 << 30)) \
    --csi.testvolumeexpandsize=$((11 << 30)) \
    --csi.testvolumeparameters="$work/params.yaml" \
    "$@" || rc=$?
if [ "$rc" != 0 ]; then
    echo "csi-sanity failed ($rc); driver log:" >&2
    tail -n 100 "$work/driver.log" >&2
fi
exit "$rc"
