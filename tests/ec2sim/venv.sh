# shellcheck shell=bash
# Sourced by tests/ec2sim/run and tests/ec2sim/pytest.sh: makes sure the
# test bed's own virtualenv exists and matches requirements.txt, then sets
# EC2SIM_PY to its python. The venv is rebuilt only when it is missing or
# requirements.txt changed (a stamp file keeps the hash it was built from), so
# a normal start costs one sha256sum. A flock serialises concurrent first
# starts (test harnesses start several simulators in parallel). Everything is
# logged to stderr: `run` must keep stdout for its single JSON line.

EC2SIM_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
EC2SIM_VENV="$EC2SIM_DIR/.venv"
EC2SIM_PY="$EC2SIM_VENV/bin/python"

ec2sim_venv_ok() {
    [ -x "$EC2SIM_PY" ] && [ "$(cat "$EC2SIM_VENV/.requirements.sha256" 2>/dev/null)" = "$1" ]
}

ec2sim_ensure_venv() {
    local want
    want="$(sha256sum "$EC2SIM_DIR/requirements.txt" | cut -d' ' -f1)"
    ec2sim_venv_ok "$want" && return 0
    (
        flock -w 600 9 || { echo "ec2sim: timed out waiting for the venv lock" >&2; exit 1; }
        ec2sim_venv_ok "$want" && exit 0
        echo "ec2sim: building $EC2SIM_VENV (first use or requirements.txt changed)" >&2
        rm -rf "$EC2SIM_VENV"
        python3 -m venv "$EC2SIM_VENV" >&2 || exit 1
        "$EC2SIM_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            -r "$EC2SIM_DIR/requirements.txt" >&2 || { rm -rf "$EC2SIM_VENV"; exit 1; }
        echo "$want" > "$EC2SIM_VENV/.requirements.sha256"
    ) 9>"$EC2SIM_DIR/.venv.lock" || return 1
}

ec2sim_ensure_venv || { echo "ec2sim: could not prepare the virtualenv" >&2; return 1 2>/dev/null || exit 1; }
export EC2SIM_PY
