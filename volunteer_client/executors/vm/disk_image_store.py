"""Find the VM image a unit names, and check its files against the manifest.

``images/vm/build.sh`` (``make vm-image``) writes the image files and a ``manifest.json``
into one directory (``build/vm`` in a checkout). The image's id is
``yadml-vm@sha256:<sha256 of the raw disk>``: the same for its qcow2 and VDI files, and
what a signed work unit names in its ``image`` field (the server's ``--vm-image``). The
manifest gives each file's sha256; a file is hashed before its first use, and again when
its size or modification time changes. The executor never downloads an image.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yadml_trainer.version import source_root, trainer_version

from ...errors import ExecutionFailed

__all__ = ["VM_ID_PATTERN", "VmImage", "VmImageStore", "default_image_dir"]

VM_ID_PATTERN = re.compile(r"^(?:[a-z0-9][a-z0-9._/:-]*@)?sha256:([0-9a-f]{64})$")
MANIFEST = "manifest.json"


def default_image_dir() -> Path:
    """``$YADML_VM_IMAGE_DIR``, else a checkout's ``build/vm``."""
    env = os.environ.get("YADML_VM_IMAGE_DIR")
    return Path(env) if env else source_root() / "build" / "vm"


@dataclass(frozen=True)
class VmImage:
    """One image file, checked: ``id`` as units name it, ``path`` the file to boot."""

    id: str
    path: Path
    disk_format: str
    bytes: int
    sha256: str
    trainer_version: str
    manifest: dict[str, Any]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class VmImageStore:
    """The images of one directory (each subdirectory with a manifest counts too)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else default_image_dir()
        self._verified: dict[Path, tuple[int, int, str]] = {}

    def manifests(self) -> list[tuple[Path, dict[str, Any]]]:
        found = []
        for path in [self.root / MANIFEST, *sorted(self.root.glob(f"*/{MANIFEST}"))]:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and isinstance(data.get("files"), dict):
                found.append((path, data))
        return found

    def find(self, wanted: str | None, disk_format: str) -> VmImage:
        """The image ``wanted`` (an id; None: the one of this client's trainer version),
        checked. Blocking (hashes the file on first use)."""
        digest = None
        if wanted is not None:
            match = VM_ID_PATTERN.match(wanted)
            if match is None:
                raise ExecutionFailed("invalid_input", f"not a VM image id: {wanted!r}")
            digest = match.group(1)
        version = trainer_version()
        for path, manifest in self.manifests():
            if digest is not None and manifest.get("raw_sha256") != digest:
                continue
            if digest is None and manifest.get("trainer_version") != version:
                continue
            return self._check(path, manifest, disk_format)
        what = wanted or f"for trainer version {version}"
        raise ExecutionFailed(
            "executor_error",
            f"VM image {what} is not in {self.root} (this client never downloads images; "
            "build it with `make vm-image`)",
        )

    def _check(self, manifest_path: Path, manifest: dict[str, Any], disk_format: str) -> VmImage:
        entry = manifest["files"].get(disk_format)
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise ExecutionFailed("executor_error", f"{manifest_path} lists no {disk_format} file")
        path = (manifest_path.parent / entry["path"]).resolve()
        if path.parent != manifest_path.parent.resolve():
            raise ExecutionFailed("executor_error", f"{manifest_path}: file outside its directory")
        try:
            st = path.stat()
        except OSError as exc:
            raise ExecutionFailed("executor_error", f"VM image file missing: {exc}") from exc
        expected = str(entry.get("sha256", ""))
        seen = self._verified.get(path)
        if seen is None or seen[:2] != (st.st_size, st.st_mtime_ns) or seen[2] != expected:
            actual = _sha256(path)
            if actual != expected:
                raise ExecutionFailed(
                    "executor_error",
                    f"VM image file {path} has sha256 {actual}, its manifest says {expected}",
                )
            self._verified[path] = (st.st_size, st.st_mtime_ns, expected)
        return VmImage(
            id=str(manifest.get("id", "")),
            path=path,
            disk_format=disk_format,
            bytes=st.st_size,
            sha256=expected,
            trainer_version=str(manifest.get("trainer_version", "")),
            manifest=manifest,
        )
