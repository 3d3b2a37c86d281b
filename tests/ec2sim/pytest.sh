#!/usr/bin/env bash
# Runs the test bed's own pytest suite with its venv. Extra arguments go to
# pytest (e.g. -k attach, -x, tests/test_attach.py). Exits with pytest's code.
# pytest's temporary directories live in a private dir removed afterwards, so
# a run leaves nothing in /tmp.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=venv.sh
source "$here/venv.sh"
cd "$here"
basetemp="$(mktemp -d "${TMPDIR:-/tmp}/ec2sim-pytest.XXXXXX")"
cleanup() { rm -rf --one-file-system "$basetemp"; }
trap cleanup EXIT
rc=0
"$EC2SIM_PY" -m pytest --basetemp "$basetemp/t" "$@" || rc=$?
exit "$rc"
