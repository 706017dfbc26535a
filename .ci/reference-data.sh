#!/usr/bin/env bash
# Third-party reference data the validator tests and `make compile` read from ../shared/argo (never
# vendored): Argo's JSON schema, examples and lint failures, and Kubeflow's compiled workflows; and
# from ../shared/crds the upstream CRDs that JobSet/Kueue/Trainer objects are validated against
# (pipelines/validate/crds.py).
# Every ref is exact: a tag for Argo, JobSet, Kueue and Trainer, a commit for Kubeflow (whose test
# data has no release tag).
# Usage: .ci/reference-data.sh [DEST [CRDS_DEST]]
#   (DEST defaults to ../shared/argo, CRDS_DEST to ../shared/crds, beside the checkout)
set -euo pipefail
ARGO_REF="${ARGO_REF:-v4.1.2}"  # the schema version the validator targets (schema-v4.1.2.json)
# kubeflow/pipelines' last change to test_data/compiled-workflows (147 workflows, after 2.17.0)
KFP_REF="${KFP_REF:-f4b1fdeec6c17afda8e1e6b704b0be67b7e1c0bd}"
JOBSET_REF="${JOBSET_REF:-v0.12.0}"
KUEUE_REF="${KUEUE_REF:-v0.19.2}"
TRAINER_REF="${TRAINER_REF:-v2.3.0}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$repo/../shared/argo}"
crds="${2:-$repo/../shared/crds}"
CRD_FILES=(
  jobset.x-k8s.io_jobsets.yaml
  kueue.x-k8s.io_localqueues.yaml kueue.x-k8s.io_clusterqueues.yaml
  kueue.x-k8s.io_resourceflavors.yaml kueue.x-k8s.io_workloadpriorityclasses.yaml
  trainer.kubeflow.org_trainjobs.yaml trainer.kubeflow.org_trainingruntimes.yaml
  trainer.kubeflow.org_clustertrainingruntimes.yaml
)
have_argo() { [ -s "$dest/schema-$ARGO_REF.json" ] && [ -n "$(ls -A "$dest/kfp-compiled" 2>/dev/null)" ]; }
have_crds() { local f; for f in "${CRD_FILES[@]}"; do [ -s "$crds/$f" ] || return 1; done; }
if have_argo && have_crds; then
  echo "reference data already in $dest and $crds"
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
if ! have_argo; then
  sparse_fetch "${ARGO_URL:-https://github.com/argoproj/argo-workflows}" "$ARGO_REF" "$tmp/argo" \
    api/jsonschema examples test/e2e/lintfail
  sparse_fetch "${KFP_URL:-https://github.com/kubeflow/pipelines}" "$KFP_REF" "$tmp/kfp" test_data/compiled-workflows
  mkdir -p "$dest/examples" "$dest/lintfail" "$dest/kfp-compiled"
  cp "$tmp/argo/api/jsonschema/schema.json" "$dest/schema-$ARGO_REF.json"
  cp "$tmp"/argo/examples/*.yaml "$dest/examples/"
  cp "$tmp"/argo/test/e2e/lintfail/*.yaml "$dest/lintfail/"
  cp "$tmp"/kfp/test_data/compiled-workflows/*.yaml "$dest/kfp-compiled/"
  echo "reference data: argo $ARGO_REF, kubeflow $KFP_REF -> $dest"
fi
if ! have_crds; then
  # the CRDs as each project generates them (../shared/crds/README.md)
  sparse_fetch "${JOBSET_URL:-https://github.com/kubernetes-sigs/jobset}" "$JOBSET_REF" "$tmp/jobset" \
    config/components/crd/bases
  sparse_fetch "${KUEUE_URL:-https://github.com/kubernetes-sigs/kueue}" "$KUEUE_REF" "$tmp/kueue" \
    config/components/crd/bases
  sparse_fetch "${TRAINER_URL:-https://github.com/kubeflow/trainer}" "$TRAINER_REF" "$tmp/trainer" \
    manifests/base/crds
  mkdir -p "$crds"
  for f in "${CRD_FILES[@]}"; do
    case "$f" in
      jobset.*) src="$tmp/jobset/config/components/crd/bases/$f" ;;
      kueue.*) src="$tmp/kueue/config/components/crd/bases/$f" ;;
      trainer.*) src="$tmp/trainer/manifests/base/crds/$f" ;;
    esac
    cp "$src" "$crds/$f"
  done
  echo "reference data: jobset $JOBSET_REF, kueue $KUEUE_REF, trainer $TRAINER_REF -> $crds"
fi
