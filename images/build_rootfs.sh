#!/usr/bin/env bash
# A Debian bookworm root filesystem with some packages, as a local image, without any image
# registry: debootstrap --variant=minbase --include=PACKAGES -> slimmed rootfs -> `docker import`.
#   base python3           the worker's and the deployment app's base (images/build_worker.sh,
#                          deploy/build_images.sh): with python3, CMD python3, precompiled stdlib
#   postgres postgresql-15 the deployment's PostgreSQL and nginx images start FROM these
#   proxy nginx-light      (deploy/images/{postgres,proxy}/Dockerfile, deploy/build_images.sh)
# Idempotent: the tag carries a hash of this script and of the package list; when it exists,
# nothing is done (no mirror, no debootstrap, no docker import).
#
# usage: images/build_rootfs.sh NAME [PACKAGE...]
#        prints the tag, yadml-rootfs-NAME:bookworm-<hash>, on its last line
# env:   DEBIAN_MIRROR  the Debian archive to debootstrap from; default: the one the host's
#                       apt sources name (images/apt_mirror.py)
set -euo pipefail

usage="usage: $0 NAME [PACKAGE...]"
name=${1:?$usage}
shift
[[ "$name" =~ ^[a-z0-9][a-z0-9._-]*$ ]] || { printf 'error: bad image name %q\n%s\n' "$name" "$usage" >&2; exit 2; }
for pkg in "$@"; do
  [[ "$pkg" =~ ^[a-z0-9][a-z0-9.+-]+$ ]] || { printf 'error: bad package name %q\n' "$pkg" >&2; exit 2; }
done
packages=$(printf '%s\n' "$@" | sort -u | paste -sd, -)

cd "$(dirname "${BASH_SOURCE[0]}")"

say() { printf '==> %s\n' "$*" >&2; }

hash=$({ sha256sum build_rootfs.sh; echo "$packages"; } | sha256sum | cut -c1-12)
tag="yadml-rootfs-${name}:bookworm-${hash}"

if docker image inspect "$tag" >/dev/null 2>&1; then
  say "rootfs image $tag exists"
  echo "$tag"
  exit 0
fi

mirror=$(python3 apt_mirror.py --suite bookworm)

if ! command -v debootstrap >/dev/null; then
  say "installing debootstrap"
  apt-get -o DPkg::Lock::Timeout=600 install -y -q debootstrap >/dev/null \
    || { apt-get update -q >/dev/null && apt-get -o DPkg::Lock::Timeout=600 install -y -q debootstrap >/dev/null; }
fi

tmp=$(mktemp -d "/var/tmp/yadml-rootfs-${name}.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root="$tmp/rootfs"

# No service may start inside the chroot while packages are configured (postgresql's
# postinst would try): debootstrap honours a policy-rc.d that says "forbidden" (101) once
# the base is unpacked, so it is put in place before.
say "debootstrap minbase bookworm${packages:+ + $packages} from $mirror (a minute or two)"
mkdir -p "$root/usr/sbin"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
debootstrap --variant=minbase ${packages:+"--include=$packages"} bookworm "$root" "$mirror" \
  >"$tmp/debootstrap.log" 2>&1 || { tail -n 30 "$tmp/debootstrap.log" >&2; exit 1; }
rm -f "$root/usr/sbin/policy-rc.d"

# Package lists, caches, docs, manuals and translations are not needed at run time.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
  "$root"/usr/share/locale/* "$root"/var/log/* "$root"/tmp/* "$root"/root/.cache

changes=(--change 'ENV LANG=C.UTF-8')
if [[ -x "$root/usr/bin/python3" ]]; then
  # The standard library's own tests are not needed either; the rest is precompiled, as
  # containers run with a read-only root filesystem.
  for lib in "$root"/usr/lib/python3.[0-9]*; do
    find "$lib" -name '__pycache__' -prune -o -name 'test' -type d -print0 | xargs -0 -r rm -rf
    chroot "$root" /usr/bin/python3 -m compileall -q -j 0 "${lib#"$root"}" >/dev/null 2>&1 || true
  done
  changes+=(--change 'CMD ["/usr/bin/python3"]')
fi

say "importing $tag"
tar -C "$root" --numeric-owner -c . | docker import "${changes[@]}" - "$tag" >/dev/null
docker image ls "$tag" >&2
echo "$tag"
