#!/usr/bin/env bash
# Builds the Go programs the tests run, all from the Go module proxy:
# - csi-sanity (kubernetes-csi/csi-test, `go install …@v5.4.0`; its go.mod has
#   no replace lines), for tests/csi-sanity.sh;
# - the real Kubernetes parts the end-to-end test runs as local processes
#   (tests/kube_e2e.rs): etcd, kube-apiserver, kube-controller-manager,
#   kube-scheduler, and the CSI sidecars the chart runs, through the wrapper
#   module in tests/kube/tools (its go.mod carries the replace lines
#   k8s.io/kubernetes needs, and pins one Kubernetes minor, 1.36, for every
#   part), plus the snapshot CRDs of the same external-snapshotter module.
# Prints the directory holding the binaries on its last line.
#
#   bash tests/kube/build.sh            # build (or reuse) and print the dir
#
# Builds go to the ordinary Go caches (GOMODCACHE, GOCACHE), so a second run
# only links; the binaries are kept under $KUBE_BIN_CACHE (default
# ~/.cache/ebs-csi-driver/kube-bin/<hash of go.mod and go.sum>), so a run with
# the same module set reuses them without relinking.
#
# Not built, because the Go module proxy serves no version of them whose
# module path matches their go.mod (their v2 tags lack a /v2 path):
# node-driver-registrar and livenessprobe. The test plays kubelet's side of
# registration itself (NodeGetInfo → CSINode and node labels), as kubelet would.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/tools"

command -v go >/dev/null || { echo "tests/kube/build.sh: no go on PATH" >&2; exit 1; }
csi_test=github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@v5.4.0
key="$( (cat go.mod go.sum; echo "$csi_test") | sha256sum | cut -c1-16)"
out="${KUBE_BIN_CACHE:-$HOME/.cache/ebs-csi-driver/kube-bin}/$key"
tools=(etcd kube-apiserver kube-controller-manager kube-scheduler
       csi-provisioner csi-attacher csi-resizer csi-snapshotter snapshot-controller
       csi-sanity)

have_all() {
    for t in "${tools[@]}"; do [ -x "$out/$t" ] || return 1; done
}
if ! have_all; then
    start=$(date +%s)
    mkdir -p "$out.tmp"
    # `tool` is every package named by the go.mod's tool directives.
    go build -ldflags='-s -w' -o "$out.tmp/" tool >&2
    # etcd's main package is its module's root (go.etcd.io/etcd/server/v3), so
    # go names the binary after the element before the major version.
    mv "$out.tmp/server" "$out.tmp/etcd"
    # The snapshot CRDs, from the same external-snapshotter client module the
    # snapshot-controller was built with.
    crds="$(go list -m -f '{{.Dir}}' github.com/kubernetes-csi/external-snapshotter/client/v8)/config/crd"
    mkdir -p "$out.tmp/crds"
    cp "$crds"/snapshot.storage.k8s.io_*.yaml "$out.tmp/crds/"
    # Outside this module: csi-test has its own go.mod and needs no replaces.
    (cd / && GOBIN="$out.tmp" GOFLAGS=-mod=mod go install -ldflags='-s -w' "$csi_test") >&2
    rm -rf "$out" && mv "$out.tmp" "$out"
    # Older module sets' binaries are of no further use.
    find "$(dirname "$out")" -mindepth 1 -maxdepth 1 ! -name "$key" -exec rm -rf {} +
    echo "tests/kube/build.sh: built ${tools[*]} in $(( $(date +%s) - start )) s" >&2
    have_all || { echo "tests/kube/build.sh: missing binaries in $out" >&2; ls "$out" >&2; exit 1; }
fi
echo "$out"
