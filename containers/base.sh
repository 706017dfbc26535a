#!/usr/bin/env bash
# The Debian 12 (bookworm) base image, made without any container registry: mmdebstrap installs
# Debian's own packages (Python 3.11, the lock's Python; tini; CA certificates) into a root
# filesystem, and buildah imports it into its local storage under an exact tag. The tag is a hash
# of this recipe, so a changed recipe makes a new base and an unchanged one is reused (idempotent).
# Its last line of output is the image reference: `make image` passes it as BASE_IMAGE.
#
#   containers/base.sh            # prints e.g. localhost/sweepyard-base:bookworm-3f2a...
#   FORCE=1 containers/base.sh    # rebuild even if the tag exists (a fresh package snapshot)
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=python3.11,python3.11-venv,ca-certificates,tini
# Debian's sources as this machine's apt knows them (bookworm, -updates, -security); else
# mmdebstrap's default mirror for the suite.
SOURCES=${DEBIAN_SOURCES:-/etc/apt/sources.list.d/debian.sources}
# documentation nobody reads in a pod (dpkg's path-exclude trips over binNMU changelogs)
TRIM='rm -rf "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/info/* "$1"/usr/share/locale/*'

recipe=$(sha256sum base.sh | cut -c1-12)
ref=localhost/sweepyard-base:bookworm-$recipe
if [[ -z ${FORCE:-} ]] && buildah inspect --type image "$ref" >/dev/null 2>&1; then
  echo "$ref"
  exit 0
fi
for tool in mmdebstrap buildah; do
  command -v "$tool" >/dev/null || {
    echo "error: $tool is missing: apt-get install -y buildah mmdebstrap" >&2
    exit 1
  }
done

tmp=$(mktemp -d)
ctr=
cleanup() {
  [[ -n $ctr ]] && buildah rm "$ctr" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
mirror=()
[[ -r $SOURCES ]] && mirror=(-)
mmdebstrap --variant=minbase --include="$PACKAGES" --customize-hook="$TRIM" \
  --aptopt='Acquire::Retries "3"' bookworm "$tmp/rootfs.tar" "${mirror[@]}" \
  < <([[ -r $SOURCES ]] && cat "$SOURCES" || true) >&2

ctr=$(buildah from scratch)
buildah add --quiet "$ctr" "$tmp/rootfs.tar" / >&2
buildah config --env LANG=C.UTF-8 --cmd /bin/bash \
  --label org.opencontainers.image.description="Debian 12 + Python 3.11 + tini (mmdebstrap)" \
  --label org.opencontainers.image.created="$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$ctr"
buildah commit --quiet --rm "$ctr" "$ref" >&2
ctr=
echo "$ref"
