#!/usr/bin/env bash
# Fill the wheelhouse that the image build mounts (the build itself needs no network): a wheel for
# every pin of requirements.lock (torch's CPU build comes from where this machine's pip finds it;
# the few sdists are built here, with the lock's Python), plus setuptools to build sweepyard's own
# wheel. FLAVOUR=cuda adds torch's CUDA build of the locked version (+cu128) and its nvidia-* wheels
# from TORCH_CUDA_INDEX. Idempotent: a stamp per lock hash. Prints the wheelhouse folder last.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${WHEELHOUSE:-.sweepyard/wheelhouse}
py=${PYTHON:-python3}
flavour=${FLAVOUR:-cpu}
TORCH_CUDA_INDEX=${TORCH_CUDA_INDEX:-https://download.pytorch.org/whl/cu128}

version=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [[ $version != 3.11 ]]; then
  echo "error: $py is Python $version; the lock and the image are Python 3.11 (set PYTHON=)" >&2
  exit 1
fi
stamp="$dir/.filled-$flavour-$(cat requirements.lock containers/wheelhouse.sh | sha256sum | cut -c1-12)"
if [[ ! -e $stamp ]]; then
  mkdir -p "$dir"
  "$py" -m pip wheel -q --no-deps -r requirements.lock 'setuptools>=68' -w "$dir" >&2
  if [[ $flavour == cuda ]]; then
    torch=$(sed -n 's/^torch==\([^+]*\).*/\1/p' requirements.lock)
    "$py" -m pip download -q --index-url "$TORCH_CUDA_INDEX" "torch==$torch+cu128" -d "$dir" >&2
  fi
  touch "$stamp"
fi
echo "$dir"
