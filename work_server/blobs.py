"""Content-addressed blob storage: the ``BlobStorage`` interface and its implementation on a
directory, ``<root>/<aa>/<sha256>``.

Blobs are immutable and named by the sha256 of their bytes, so writes are idempotent and
a half-written file is never visible (write to a temp file, fsync, rename). That makes one
directory safe to share between server processes, also over NFS: two processes storing
the same blob write the same bytes, and a reader sees no file or the whole file. Several
server processes on one PostgreSQL database share the state directory, blobs included.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Protocol

from yadml_common.fsutil import atomic_write

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class BlobStorage(Protocol):
    """What the server needs of a blob store. ``path`` is the directory store's own: the API
    serves blobs straight from their files (sendfile), which another store would replace by
    a stream or a redirect."""

    def exists(self, sha256: str) -> bool: ...
    def put(self, data: bytes) -> str: ...
    def get(self, sha256: str) -> bytes: ...
    def size(self, sha256: str) -> int: ...
    def delete(self, sha256: str) -> bool: ...
    def list(self) -> list[str]: ...
    def disk_usage(self) -> int: ...
    def path(self, sha256: str) -> Path: ...


class BlobStore:
    """``BlobStorage`` on a local or shared directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not SHA256_RE.match(sha256):
            raise ValueError("blob names are lowercase hex sha256")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put(self, data: bytes) -> str:
        """Store ``data``; returns its sha256. Idempotent."""
        sha = hashlib.sha256(data).hexdigest()
        dest = self.path(sha)
        if dest.is_file():
            return sha
        atomic_write(dest, data)
        return sha

    def get(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def size(self, sha256: str) -> int:
        return self.path(sha256).stat().st_size

    def delete(self, sha256: str) -> bool:
        try:
            self.path(sha256).unlink()
        except FileNotFoundError:
            return False
        return True

    def list(self) -> list[str]:
        return [p.name for p in self.root.glob("??/*") if SHA256_RE.match(p.name)]

    def disk_usage(self) -> int:
        return sum(p.stat().st_size for p in self.root.glob("??/*") if p.is_file())
