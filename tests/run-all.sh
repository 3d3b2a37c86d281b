#!/usr/bin/env bash
# The project's test command (README.md "Test"; .ci/run runs exactly this).
# 1. the Go programs the tests run, from the Go module proxy (tests/kube/build.sh:
#    csi-sanity, and a real Kubernetes control plane and CSI sidecars), cached;
# 2. the EC2 test bed's and the Kubernetes API stand-in's own suites (pytest);
# 3. every Rust test: unit tests, integration tests against the test bed and,
#    as root, real loop devices, mkfs and mount, and the end-to-end test in the
#    real control plane (tests/kube_e2e.rs);
# 4. the real csi-sanity, xfs and ext4.
# Integration tests that need root or a tool this machine lacks say so in
# their output and skip; under CI (CI set) the Go-built parts are required,
# so the end-to-end test and csi-sanity fail instead of skipping.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

phase_start=$SECONDS
phase() {
    [ -n "${phase_name:-}" ] && echo "   ($phase_name: $((SECONDS - phase_start)) s)"
    phase_name="$1"
    phase_start=$SECONDS
    echo "== $1"
}

phase "Go programs: csi-sanity, etcd, kube-apiserver, kube-controller-manager, kube-scheduler, CSI sidecars"
if command -v go >/dev/null; then
    KUBE_BIN_DIR="$(bash tests/kube/build.sh)"
    export KUBE_BIN_DIR
    echo "   in $KUBE_BIN_DIR"
elif [ -n "${CI:-}" ]; then
    echo "run-all.sh: CI needs Go to build csi-sanity and the Kubernetes parts" >&2
    exit 1
else
    echo "   SKIP: no go on PATH; tests/kube_e2e.rs and csi-sanity will say SKIP"
fi
if [ -n "${CI:-}" ]; then export KUBE_E2E_REQUIRED=1; fi
# kubectl and helm for the end-to-end test: deploy/check.sh installs them (and
# checks the deployment artefacts) when they are not there yet.
if [ ! -x deploy/.tools/bin/kubectl ] || [ ! -x deploy/.tools/bin/helm ]; then
    bash deploy/check.sh
fi

phase "ec2sim: the EC2 test bed's own tests"
bash tests/ec2sim/pytest.sh -q

phase "k8sapi: the Kubernetes API stand-in's own tests"
(source tests/ec2sim/venv.sh && "$EC2SIM_PY" -m pytest -q tests/k8sapi)

phase "cargo test: unit and integration tests"
# --nocapture: tests that cannot run here (not root, a tool missing) say why,
# and the measuring tests print their numbers.
cargo test --locked -- --nocapture

phase "csi-sanity: the real conformance suite, xfs and ext4, attach limit on"
bash tests/csi-sanity.sh
phase "done"
