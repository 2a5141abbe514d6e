"""Build the YADML VM's initramfs: busybox, images/vm/init and a handful of kernel modules.

Build step of ``images/vm/build.sh`` (host side, standard library only)::

    python3 images/vm/initramfs.py --modules-dir DIR/lib/modules/VERSION \\
        --busybox BUSYBOX --init images/vm/init --output initrd.img

The modules the VM needs (virtio and SATA disks, squashfs) are resolved with their
dependencies from each module's ``.modinfo`` section (no depmod needed on the host) and
listed in ``/modules.order`` in load order. The archive is a gzip-compressed ``newc`` cpio
written here (no cpio tool needed), with ``/dev/console`` as the kernel wants it.
"""

from __future__ import annotations

import argparse
import gzip
import re
import stat
import sys
from pathlib import Path

#: What the VM loads: disks under QEMU (virtio-blk) and VirtualBox (SATA/AHCI,
#: virtio-scsi), the squashfs root, and virtio-rng for early entropy.
WANTED = ("virtio_pci", "virtio_blk", "virtio_scsi", "ahci", "sd_mod", "squashfs", "virtio_rng")


def _key(name: str) -> str:
    return name.replace("-", "_")


def module_index(modules_dir: Path) -> dict[str, Path]:
    """Module name (``_`` for ``-``) -> its ``.ko`` file."""
    return {_key(p.name.removesuffix(".ko")): p for p in modules_dir.rglob("*.ko")}


def depends(path: Path) -> list[str]:
    """The ``depends=`` list of a module's ``.modinfo``."""
    match = re.search(rb"(?:^|\0)depends=([^\0]*)\0", path.read_bytes())
    if match is None or not match.group(1):
        return []
    return [_key(n) for n in match.group(1).decode().split(",") if n]


def load_order(wanted: tuple[str, ...], index: dict[str, Path]) -> list[str]:
    """The modules to load, dependencies first; modules built into the kernel are skipped."""
    order: list[str] = []

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in order or name not in index:
            return
        if name in stack:
            raise SystemExit(f"module dependency cycle: {' -> '.join((*stack, name))}")
        for dep in depends(index[name]):
            visit(dep, (*stack, name))
        order.append(name)

    for name in wanted:
        visit(_key(name), ())
    return order


class Cpio:
    """A ``newc`` cpio archive in memory."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ino = 1

    def _entry(
        self, name: str, mode: int, body: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        fields = (self.ino, mode, 0, 0, 1, 0, len(body), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
        header = "070701" + "".join(f"{v:08x}" for v in fields)
        self.ino += 1
        self.data += header.encode() + name.encode() + b"\0"
        self.data += b"\0" * (-len(self.data) % 4)
        self.data += body
        self.data += b"\0" * (-len(self.data) % 4)

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, body: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, body)

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        self.data += b"\0" * (-len(self.data) % 512)
        return bytes(self.data)


def build(modules_dir: Path, busybox: Path, init: Path) -> tuple[bytes, list[str]]:
    index = module_index(modules_dir)
    order = load_order(WANTED, index)
    archive = Cpio()
    for directory in ("bin", "dev", "proc", "sys", "modules", "newroot"):
        archive.directory(directory)
    archive.char_device("dev/console", 5, 1)
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    archive.file("init", init.read_bytes(), 0o755)
    for name in order:
        archive.file(f"modules/{name}.ko", index[name].read_bytes())
    archive.file("modules.order", "".join(f"{n}\n" for n in order).encode())
    return gzip.compress(archive.finish(), compresslevel=9, mtime=0), order


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules-dir", type=Path, required=True)
    parser.add_argument("--busybox", type=Path, required=True)
    parser.add_argument("--init", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    data, order = build(args.modules_dir, args.busybox, args.init)
    missing = [n for n in WANTED if n not in order]
    if missing:
        print(f"note: built into the kernel or absent: {', '.join(missing)}", file=sys.stderr)
    args.output.write_bytes(data)
    print(
        f"initramfs {args.output}: {len(data)} bytes, modules: {' '.join(order)}", file=sys.stderr
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
