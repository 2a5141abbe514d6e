#!/usr/bin/env bash
# Build the worker image's base locally, without any image registry:
#   debootstrap --variant=minbase bookworm (+ python3) -> slimmed rootfs -> `docker import`.
# Idempotent: does nothing when the tag (which carries this script's hash) already exists.
#
# usage: images/build_base.sh            prints the base image tag on its last line
# env:   DEBIAN_MIRROR (default: http://deb.debian.org/debian)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '==> %s\n' "$*" >&2; }

script_hash=$(sha256sum images/build_base.sh | cut -c1-12)
tag="yadml-base:bookworm-${script_hash}"

if docker image inspect "$tag" >/dev/null 2>&1; then
  say "base image $tag exists"
  echo "$tag"
  exit 0
fi

if ! command -v debootstrap >/dev/null; then
  say "installing debootstrap"
  apt-get -o DPkg::Lock::Timeout=600 install -y -q debootstrap >/dev/null \
    || { apt-get update -q >/dev/null && apt-get -o DPkg::Lock::Timeout=600 install -y -q debootstrap >/dev/null; }
fi

mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

tmp=$(mktemp -d /var/tmp/yadml-base.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
say "debootstrap minbase bookworm + python3 from $mirror (about a minute)"
debootstrap --variant=minbase --include=python3 bookworm "$tmp/rootfs" "$mirror" >"$tmp/debootstrap.log" 2>&1 \
  || { tail -n 30 "$tmp/debootstrap.log" >&2; exit 1; }

root="$tmp/rootfs"
# Nothing below is needed to run Python: package lists and caches, docs, translations.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
  "$root"/usr/share/locale/* "$root"/var/log/* "$root"/tmp/* "$root"/root/.cache
find "$root/usr/lib/python3.11" -name '__pycache__' -prune -o -name 'test' -type d -print0 \
  | xargs -0 -r rm -rf
# Precompiled standard library (the container's root filesystem is read-only).
chroot "$root" /usr/bin/python3 -m compileall -q -j 0 /usr/lib/python3.11 >/dev/null 2>&1 || true

say "importing $tag"
tar -C "$root" --numeric-owner -c . \
  | docker import --change 'CMD ["/usr/bin/python3"]' --change 'ENV LANG=C.UTF-8' - "$tag" >/dev/null
docker image ls "$tag" >&2
echo "$tag"
