#!/usr/bin/env bash
# Make sure the VM tools are installed (Debian packages, apt as root). Idempotent and quick
# when they are there.
#
# usage: scripts/vm_tools.sh [run|build]
#   run    QEMU (qemu-system-x86_64, qemu-img): what the client's vm executor needs
#   build  run + what images/vm/build.sh needs (squashfs-tools, mtools, dosfstools, syslinux,
#          fdisk). The kernel is not installed on the host: build.sh downloads its package.
set -euo pipefail

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

what=${1:-run}
declare -A need=([qemu-system-x86_64]=qemu-system-x86 [qemu-img]=qemu-utils)
if [[ "$what" == build ]]; then
  need+=([mksquashfs]=squashfs-tools [mcopy]=mtools [mkfs.vfat]=dosfstools [syslinux]=syslinux
    [sfdisk]=fdisk [dpkg-deb]=dpkg)
fi
missing=()
for tool in "${!need[@]}"; do
  command -v "$tool" >/dev/null || missing+=("${need[$tool]}")
done
if [[ "$what" == build && ! -f /usr/lib/syslinux/mbr/mbr.bin ]]; then
  missing+=(syslinux-common)
fi
[[ ${#missing[@]} -eq 0 ]] && exit 0

[[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}; as root: apt-get install ${missing[*]}"
say "installing ${missing[*]} (Debian)"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
  || { apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null \
       && apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
