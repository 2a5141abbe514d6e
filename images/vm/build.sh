#!/usr/bin/env bash
# Build the YADML VM image from the worker image's root file system, with nothing downloaded
# inside the image (the kernel and busybox packages are fetched on the host with apt):
#   1. the worker image (images/build_worker.sh) -> `docker export` -> squashfs (zstd), the
#      VM's read-only root file system: the same Python, torch and trainer as the docker route;
#   2. Debian's kernel (linux-image-amd64's package, `apt-get download` + `dpkg-deb -x`) and
#      an initramfs (images/vm/initramfs.py: busybox-static, images/vm/init, a few modules);
#   3. a raw disk: MBR (syslinux) | p1 FAT16 /boot (kernel, initramfs, syslinux.cfg, with
#      `syslinux --install`, no mount) | p2 squashfs; no network device is ever configured;
#   4. `qemu-img convert` to qcow2 (QEMU) and VDI (VirtualBox), and manifest.json: the image
#      id (sha256 of the raw disk, what units name), each file's size and sha256.
# Idempotent: nothing is rebuilt when manifest.json's build_hash matches (worker image id,
# kernel package, these scripts).
#
# usage: images/vm/build.sh        prints the manifest path on its last line
# env:   PYTHON (default .venv/bin/python), VM_IMAGE_DIR (default build/vm), FORCE=1
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

say() { printf "==> [%3ds] %s\n" "$SECONDS" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

python=${PYTHON:-.venv/bin/python}
out=${VM_IMAGE_DIR:-build/vm}
cache=build/vm-cache
mkdir -p "$out" "$cache"

scripts/vm_tools.sh build

worker=$(PYTHON="$python" images/build_worker.sh | tail -n 1)
worker_id=$(docker image inspect --format '{{.Id}}' "$worker")
version=$("$python" -m yadml_trainer.version version)

apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
kernel_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
if [[ -z "$kernel_pkg" ]]; then
  apt_get update -q >/dev/null
  kernel_pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
fi
[[ -n "$kernel_pkg" ]] || die "apt knows no linux-image-amd64"
kernel_ver=$(apt-cache policy "$kernel_pkg" | awk '/Candidate:/ { print $2 }')
busybox_ver=$(apt-cache policy busybox-static | awk '/Candidate:/ { print $2 }')

build_hash=$(
  {
    echo "worker $worker_id kernel $kernel_pkg $kernel_ver busybox $busybox_ver"
    sha256sum images/vm/build.sh images/vm/init images/vm/initramfs.py images/vm/syslinux.cfg
  } | sha256sum | cut -c1-16
)
manifest=$out/manifest.json
if [[ -z "${FORCE:-}" && -f "$manifest" ]] \
  && [[ "$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("build_hash",""))' "$manifest")" == "$build_hash" ]]; then
  say "VM image is up to date ($manifest)"
  echo "$manifest"
  exit 0
fi

# Host-side downloads (cached): the kernel and busybox packages, never installed here.
fetch() {
  local pkg=$1 ver=$2 deb
  deb=$(ls "$cache/${pkg}_"*.deb 2>/dev/null | grep -F "${ver#*:}_" | head -n 1 || true)
  if [[ -z "$deb" ]]; then
    say "apt-get download $pkg=$ver (host side)"
    (cd "$cache" && apt_get download -q "$pkg=$ver" >/dev/null 2>&1) \
      || (apt_get update -q >/dev/null && cd "$cache" && apt_get download -q "$pkg=$ver" >/dev/null)
    deb=$(ls "$cache/${pkg}_"*.deb | grep -F "${ver#*:}_" | head -n 1)
  fi
  echo "$deb"
}
kernel_deb=$(fetch "$kernel_pkg" "$kernel_ver")
busybox_deb=$(fetch busybox-static "$busybox_ver")

tmp=$(mktemp -d /var/tmp/yadml-vm.XXXXXX)
cid=""
cleanup() {
  [[ -n "$cid" ]] && docker rm -f "$cid" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT

say "kernel $kernel_pkg $kernel_ver, busybox $busybox_ver"
dpkg-deb -x "$kernel_deb" "$tmp/kernel"
dpkg-deb -x "$busybox_deb" "$tmp/busybox"
kname=${kernel_pkg#linux-image-}
"$python" images/vm/initramfs.py --modules-dir "$tmp/kernel/lib/modules/$kname" \
  --busybox "$tmp/busybox/bin/busybox" --init images/vm/init --output "$tmp/initrd.img"

say "root file system: docker export $worker -> squashfs (zstd)"
cid=$(docker create "$worker")
mkdir "$tmp/rootfs"
docker export "$cid" | tar -x -C "$tmp/rootfs" --numeric-owner
docker rm -f "$cid" >/dev/null
cid=""
rm -f "$tmp/rootfs/.dockerenv"
mkdir -p "$tmp/rootfs"/{proc,sys,dev,tmp}
printf '%s\n' "$version" >"$tmp/rootfs/etc/yadml-trainer-version"
mksquashfs "$tmp/rootfs" "$tmp/root.sqfs" -comp zstd -Xcompression-level 3 -b 1M \
  -noappend -no-xattrs -quiet -no-progress -processors "$(nproc)" >&2
rm -rf "$tmp/rootfs"

say "boot partition (FAT16, syslinux) and raw disk"
mib=$((1 << 20))
boot_mib=$(( ($(stat -c %s "$tmp/kernel/boot/vmlinuz-$kname") + $(stat -c %s "$tmp/initrd.img")) / mib + 4 ))
truncate -s "$((boot_mib * mib))" "$tmp/boot.fat"
mkfs.vfat -F 16 -n YADMLBOOT "$tmp/boot.fat" >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -i "$tmp/boot.fat" "$tmp/kernel/boot/vmlinuz-$kname" ::/vmlinuz
mcopy -i "$tmp/boot.fat" "$tmp/initrd.img" ::/initrd.img
mcopy -i "$tmp/boot.fat" images/vm/syslinux.cfg ::/syslinux.cfg
syslinux --install "$tmp/boot.fat"

root_mib=$(( ($(stat -c %s "$tmp/root.sqfs") + mib - 1) / mib ))
disk=$tmp/disk.raw
truncate -s "$(( (1 + boot_mib + root_mib) * mib ))" "$disk"
sfdisk -q "$disk" >/dev/null <<EOF
label: dos
start=2048, size=$((boot_mib * 2048)), type=6, bootable
start=$(( (1 + boot_mib) * 2048 )), size=$((root_mib * 2048)), type=83
EOF
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none
dd if="$tmp/boot.fat" of="$disk" bs=1M seek=1 conv=notrunc status=none
dd if="$tmp/root.sqfs" of="$disk" bs=1M seek="$((1 + boot_mib))" conv=notrunc status=none
disk_sha=$(sha256sum "$disk" | cut -d' ' -f1)

name=yadml-vm-$version
say "qemu-img convert -> $out/$name.qcow2, $out/$name.vdi"
rm -f "$out"/yadml-vm-*.qcow2 "$out"/yadml-vm-*.vdi "$manifest"
qemu-img convert -f raw -O qcow2 "$disk" "$out/$name.qcow2"
qemu-img convert -f raw -O vdi "$disk" "$out/$name.vdi"

"$python" - "$manifest" <<EOF
import hashlib, json, os, sys
from pathlib import Path

out = Path("$out")

def entry(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    st = os.stat(path)
    return {"path": path.name, "bytes": st.st_size, "disk_bytes": st.st_blocks * 512,
            "sha256": digest.hexdigest()}

manifest = {
    "name": "yadml-vm",
    "id": "yadml-vm@sha256:$disk_sha",
    "raw_sha256": "$disk_sha",
    "raw_bytes": $(stat -c %s "$disk"),
    "trainer_version": "$version",
    "build_hash": "$build_hash",
    "worker_image": "$worker_id",
    "kernel": "$kernel_pkg $kernel_ver",
    "busybox": "$busybox_ver",
    "root_squashfs_bytes": $(stat -c %s "$tmp/root.sqfs"),
    "initramfs_bytes": $(stat -c %s "$tmp/initrd.img"),
    "files": {
        "qcow2": entry(out / "$name.qcow2"),
        "vdi": entry(out / "$name.vdi"),
    },
}
Path(sys.argv[1]).write_text(json.dumps(manifest, indent=2) + "\n")
EOF
ls -l "$out" >&2
echo "$manifest"
