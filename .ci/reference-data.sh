#!/usr/bin/env bash
# Third-party reference data the validator tests and `make compile` read from ../shared/argo (never
# vendored): Argo's JSON schema, examples and lint failures, and Kubeflow's compiled workflows.
# Both refs are exact: a tag for Argo, a commit for Kubeflow (whose test data has no release tag).
# Usage: .ci/reference-data.sh [DEST]   (DEST defaults to ../shared/argo beside the checkout)
set -euo pipefail
ARGO_REF="${ARGO_REF:-v4.1.2}"  # the schema version the validator targets (schema-v4.1.2.json)
# kubeflow/pipelines' last change to test_data/compiled-workflows (147 workflows, after 2.17.0)
KFP_REF="${KFP_REF:-f4b1fdeec6c17afda8e1e6b704b0be67b7e1c0bd}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$repo/../shared/argo}"
if [ -s "$dest/schema-$ARGO_REF.json" ] && [ -n "$(ls -A "$dest/kfp-compiled" 2>/dev/null)" ]; then
  echo "reference data already in $dest"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# fetch one exact ref (tag or commit), only the folders named, without history
sparse_fetch() {  # URL REF DIR PATH...
  local url="$1" ref="$2" dir="$3"
  shift 3
  git init -q "$dir"
  git -C "$dir" remote add origin "$url"
  git -C "$dir" sparse-checkout set "$@"
  git -C "$dir" fetch -q --depth 1 --filter=blob:none origin "$ref"
  git -C "$dir" checkout -q FETCH_HEAD
}
sparse_fetch "${ARGO_URL:-https://github.com/argoproj/argo-workflows}" "$ARGO_REF" "$tmp/argo" \
  api/jsonschema examples test/e2e/lintfail
sparse_fetch "${KFP_URL:-https://github.com/kubeflow/pipelines}" "$KFP_REF" "$tmp/kfp" test_data/compiled-workflows
mkdir -p "$dest/examples" "$dest/lintfail" "$dest/kfp-compiled"
cp "$tmp/argo/api/jsonschema/schema.json" "$dest/schema-$ARGO_REF.json"
cp "$tmp"/argo/examples/*.yaml "$dest/examples/"
cp "$tmp"/argo/test/e2e/lintfail/*.yaml "$dest/lintfail/"
cp "$tmp"/kfp/test_data/compiled-workflows/*.yaml "$dest/kfp-compiled/"
echo "reference data: argo $ARGO_REF, kubeflow $KFP_REF -> $dest"
