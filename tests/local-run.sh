#!/usr/bin/env bash
# Runs the driver's main job locally: starts the EC2 test bed (tests/ec2sim)
# and the driver in `all` mode against it, on a socket in a temp dir. As root
# the test bed backs attached volumes with real loop devices, so a CSI client
# (or csi-sanity, or `cargo run --example volume_life`) can create, attach,
# format and mount volumes for real. Ctrl-C stops both and cleans up.
#
#   bash tests/local-run.sh [--delays fast|realistic|none] [driver flags...]
#   bash tests/local-run.sh --demo   # also walk one volume through its life
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

delays=fast demo=0 driver_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --delays) delays="$2"; shift 2 ;;
        --delays=*) delays="${1#*=}"; shift ;;
        --demo) demo=1; shift ;;
        *) driver_args+=("$1"); shift ;;
    esac
done

work="$(mktemp -d "${TMPDIR:-/tmp}/ebs-csi-local.XXXXXX")"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build=(--bin ebs-csi-driver)
[ "$demo" = 1 ] && build+=(--example volume_life)
cargo build --locked --quiet "${build[@]}"

# Start the emulator; its first stdout line says where it listens.
mkfifo "$work/ready"
tests/ec2sim/run --delays "$delays" >"$work/ready" 2>>"$work/ec2sim.log" &
pids+=("$!")
read -r ready <"$work/ready"
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$ready" "$1"; }
export AWS_ENDPOINT_URL_EC2="$(field endpoint)"
export AWS_EC2_METADATA_SERVICE_ENDPOINT="$(field imds_endpoint)"
export AWS_REGION="$(field region)"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
device_dir="$(field device_dir)"
socket="$work/csi.sock"

log=/dev/stderr
# In the demo the driver's log goes to a file so the steps stay readable.
[ "$demo" = 1 ] && log="$work/driver.log"
target/debug/ebs-csi-driver all --endpoint "unix://$socket" \
    --device-dir "$device_dir" "${driver_args[@]}" 2>>"$log" &
pids+=("$!")
for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.1; done
[ -S "$socket" ] || { echo "driver did not open $socket" >&2; exit 1; }

echo "EC2 emulator: $AWS_ENDPOINT_URL_EC2 (instance $(field instance_id) in $(field availability_zone), devices: $(field devices))"
echo "CSI endpoint: unix://$socket"
if [ "$demo" = 1 ]; then
    rc=0
    target/debug/examples/volume_life "$socket" "$work/kubelet" || rc=$?
    if [ "$rc" != 0 ]; then
        echo "driver log (last 60 lines):" >&2
        tail -n 60 "$log" >&2
    fi
    exit "$rc"
else
    echo "Ctrl-C to stop."
    wait "${pids[1]}"
fi
