#!/usr/bin/env bash
# A Debian bookworm root filesystem with some packages, as a local image, without any image
# registry: debootstrap --variant=minbase --include=PACKAGES -> slimmed rootfs -> `docker import`.
# The deployment's PostgreSQL and nginx images start FROM these (deploy/images/*/Dockerfile).
# Idempotent: the tag carries a hash of this script and of the package list.
#
# usage: deploy/images/build_rootfs.sh NAME PACKAGE[,PACKAGE...]   prints the tag on its last line
# env:   DEBIAN_MIRROR (default: http://deb.debian.org/debian)
set -euo pipefail

name=${1:?usage: $0 NAME PACKAGES}
packages=${2:?usage: $0 NAME PACKAGES}

cd "$(dirname "${BASH_SOURCE[0]}")"

say() { printf '==> %s\n' "$*" >&2; }

hash=$({ sha256sum build_rootfs.sh; echo "$packages"; } | sha256sum | cut -c1-12)
tag="yadml-rootfs-${name}:bookworm-${hash}"

if docker image inspect "$tag" >/dev/null 2>&1; then
  say "rootfs image $tag exists"
  echo "$tag"
  exit 0
fi

if ! command -v debootstrap >/dev/null; then
  say "installing debootstrap"
  apt-get -o DPkg::Lock::Timeout=600 install -y -q debootstrap >/dev/null \
    || { apt-get update -q >/dev/null && apt-get -o DPkg::Lock::Timeout=600 install -y -q debootstrap >/dev/null; }
fi

mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
tmp=$(mktemp -d "/var/tmp/yadml-rootfs-${name}.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root="$tmp/rootfs"

# No service may start inside the chroot while packages are configured (postgresql's
# postinst would try): debootstrap honours a policy-rc.d that says "forbidden" (101) once
# the base is unpacked, so it is put in place by a hook on the package list.
say "debootstrap minbase bookworm + $packages from $mirror (a minute or two)"
mkdir -p "$root/usr/sbin"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" \
  >"$tmp/debootstrap.log" 2>&1 || { tail -n 30 "$tmp/debootstrap.log" >&2; exit 1; }
rm -f "$root/usr/sbin/policy-rc.d"

# Package lists, caches, docs, manuals and translations are not needed at run time.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
  "$root"/usr/share/locale/* "$root"/var/log/* "$root"/tmp/* "$root"/root/.cache

say "importing $tag"
tar -C "$root" --numeric-owner -c . \
  | docker import --change 'ENV LANG=C.UTF-8' - "$tag" >/dev/null
docker image ls "$tag" >&2
echo "$tag"
