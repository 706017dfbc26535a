#!/usr/bin/env bash
# Build the project's image offline: the base (containers/base.sh, unless BASE_IMAGE is given), the
# wheelhouse (containers/wheelhouse.sh), then containers/Dockerfile's TARGET with the first engine
# found (buildah, podman, docker). Its last line of output is the image reference.
#   TARGET=cpu|cuda|test  IMAGE_TAG=localhost/sweepyard:cpu  BASE_IMAGE=...  ENGINE=buildah
set -euo pipefail
cd "$(dirname "$0")/.."

target=${TARGET:-cpu}
tag=${IMAGE_TAG:-localhost/sweepyard:$target}
engine=${ENGINE:-}
if [[ -z $engine ]]; then
  for e in buildah podman docker; do
    if command -v "$e" >/dev/null && { [[ $e != docker ]] || docker info >/dev/null 2>&1; }; then
      engine=$e
      break
    fi
  done
fi
[[ -n $engine ]] || {
  echo "error: no image builder: apt-get install -y buildah mmdebstrap" >&2
  exit 1
}
wheelhouse=$(FLAVOUR=$([[ $target == cuda ]] && echo cuda || echo cpu) containers/wheelhouse.sh | tail -1)
base=${BASE_IMAGE:-}
if [[ -z $base && $engine == buildah ]]; then  # no registry here: Debian's packages make it
  base=$(containers/base.sh | tail -1)
fi
args=(-f containers/Dockerfile --target "$target" -t "$tag" --build-context "wheelhouse=$wheelhouse")
[[ -n $base ]] && args+=(--build-arg "BASE_IMAGE=$base")
case $engine in
  # chroot isolation: RUN steps need no user namespaces or runc (as root, here and on CI runners);
  # it shares the host's network, which the build does not use (pip runs with --no-index)
  buildah) buildah bud --layers --isolation "${BUILDAH_ISOLATION:-chroot}" "${args[@]}" . >&2 ;;
  podman) podman build --layers --network none "${args[@]}" . >&2 ;;
  docker) docker buildx build --load "${args[@]}" . >&2 ;;
esac
echo "$tag"
