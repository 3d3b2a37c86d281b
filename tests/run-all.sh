#!/usr/bin/env bash
# The project's test command (README.md "Test"; .ci/run runs exactly this).
# 1. the EC2 test bed's and the Kubernetes API stand-in's own suites (pytest);
# 2. every Rust test: unit tests, and integration tests against the test bed
#    and, as root, real loop devices, mkfs and mount.
# Integration tests that need root or a tool this machine lacks say so in
# their output and skip; everything else must pass.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== ec2sim: the EC2 test bed's own tests"
bash tests/ec2sim/pytest.sh -q

echo "== k8sapi: the Kubernetes API stand-in's own tests"
(source tests/ec2sim/venv.sh && "$EC2SIM_PY" -m pytest -q tests/k8sapi)

echo "== cargo test: unit and integration tests"
# --nocapture: tests that cannot run here (not root, a tool missing) say why,
# and the measuring tests print their numbers.
cargo test --locked -- --nocapture

echo "== csi-sanity: the real conformance suite, xfs and ext4, attach limit on"
bash tests/csi-sanity.sh
