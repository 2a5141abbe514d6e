"""The client's state directory.

Layout::

    <state-dir>/
        attachment.json          server_url, host_id, host_token, name, runtimes,
                                 pinned project keys, CA certificate path (mode 0600)
        lock                     flock'ed by the running daemon
        cache/<sha256>           content-addressed input blobs, LRU by mtime, size-capped
        units/<result_id>/       one directory per unit in flight
            unit.json            the WorkUnitAssignment + local status (see UnitRecord)
            inputs/<name>        hard links (or copies) of the cached inputs
            task.json, output.safetensors, progress   the executor's files

Every JSON file is written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from yadml_common.fsutil import atomic_write
from yadml_common.wire import Runtime, WorkUnitAssignment

from .errors import FailureReason, NotAttached, StateLocked

__all__ = [
    "DEFAULT_CACHE_MAX_BYTES",
    "STATE_DIR_ENV",
    "Attachment",
    "InputCache",
    "PendingFailure",
    "StateDir",
    "UnitRecord",
    "UnitStatus",
    "UnitStore",
    "default_state_dir",
    "sha256_file",
]

log = logging.getLogger(__name__)

STATE_DIR_ENV = "YADML_CLIENT_STATE_DIR"
DEFAULT_CACHE_MAX_BYTES = 1 << 30

#: ``downloading`` -> ``running`` -> ``uploading`` -> ``done``; ``reporting`` = a failure
#: report is still to be sent.
UnitStatus = Literal["downloading", "running", "uploading", "reporting", "done"]


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$YADML_CLIENT_STATE_DIR``, else ``~/.local/state/yadml-client``."""
    env = os.environ if env is None else env
    value = env.get(STATE_DIR_ENV)
    if value:
        return Path(value).expanduser()
    return Path.home() / ".local" / "state" / "yadml-client"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _LocalModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _default_runtimes() -> list[Runtime]:
    return ["process"]


class Attachment(_LocalModel):
    """Which server this client works for, and its credentials there."""

    server_url: str
    host_id: int
    host_token: str
    name: str
    runtimes: list[Runtime] = Field(default_factory=_default_runtimes)
    #: pinned project public keys (raw Ed25519, base64): work units must be signed by one
    project_keys: list[str] = Field(default_factory=list)
    #: CA certificate (PEM file) that the server's HTTPS certificate must chain to
    ca_cert: str | None = None


class PendingFailure(_LocalModel):
    reason: FailureReason
    detail: str = ""


class UnitRecord(_LocalModel):
    """``units/<result_id>/unit.json``: the assignment and how far the client got with it."""

    assignment: WorkUnitAssignment
    status: UnitStatus = "downloading"
    failure: PendingFailure | None = None

    @property
    def result_id(self) -> int:
        return self.assignment.result_id


class InputCache:
    """Content-addressed, sha256-verified input blobs with a least-recently-used size cap.

    Files are named by their sha256; the mtime is the last use. Blobs are written by
    ``ServerAPI.download_blob`` straight to :meth:`path_for` (it verifies before renaming).
    """

    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_CACHE_MAX_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256

    def get(self, sha256: str, *, verify: bool = True) -> Path | None:
        """The cached blob (its use time refreshed), or ``None``; a corrupt one is removed."""
        path = self.path_for(sha256)
        if not path.is_file():
            return None
        if verify and sha256_file(path) != sha256:
            log.warning("cache: %s is corrupt, removing it", sha256)
            path.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        return path

    def entries(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if p.is_file() and not p.name.startswith(".")]

    def total_bytes(self) -> int:
        total = 0
        for path in self.entries():
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    def remove_partials(self) -> int:
        """Remove temporary files of interrupted downloads (call when no download runs)."""
        if not self.root.is_dir():
            return 0
        partials = [p for p in self.root.iterdir() if p.name.startswith(".") and p.is_file()]
        for path in partials:
            path.unlink(missing_ok=True)
        return len(partials)

    def evict(self, *, keep: frozenset[str] = frozenset()) -> list[str]:
        """Remove least recently used blobs (except ``keep``) until under ``max_bytes``."""
        stats: list[tuple[float, int, Path]] = []
        for path in self.entries():
            with contextlib.suppress(OSError):
                st = path.stat()
                stats.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in stats)
        removed: list[str] = []
        for _, size, path in sorted(stats):
            if total <= self.max_bytes:
                break
            if path.name in keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            removed.append(path.name)
        return removed


class UnitStore:
    """``units/<result_id>/``: one directory and ``unit.json`` per unit in flight."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def unit_dir(self, result_id: int) -> Path:
        return self.root / str(int(result_id))

    def save(self, record: UnitRecord) -> Path:
        directory = self.unit_dir(record.result_id)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / "unit.json", record.model_dump_json(indent=2), mode=0o644)
        return directory

    def load(self, result_id: int) -> UnitRecord | None:
        path = self.unit_dir(result_id) / "unit.json"
        try:
            return UnitRecord.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None

    def load_all(self) -> list[UnitRecord]:
        """Every readable unit, oldest result first; unreadable leftovers are removed."""
        if not self.root.is_dir():
            return []
        records: list[UnitRecord] = []
        for directory in self.root.iterdir():
            if not directory.is_dir():
                continue
            try:
                records.append(
                    UnitRecord.model_validate_json((directory / "unit.json").read_bytes())
                )
            except (OSError, ValidationError) as exc:
                log.warning("units: dropping unreadable %s: %s", directory.name, exc)
                shutil.rmtree(directory, ignore_errors=True)
        return sorted(records, key=lambda r: r.result_id)

    def remove(self, result_id: int) -> None:
        shutil.rmtree(self.unit_dir(result_id), ignore_errors=True)


class StateDir:
    """The client's state directory (see the module docstring for its layout)."""

    def __init__(self, root: Path, *, cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES) -> None:
        self.root = root
        self.cache = InputCache(root / "cache", max_bytes=cache_max_bytes)
        self.units = UnitStore(root / "units")

    @property
    def attachment_path(self) -> Path:
        return self.root / "attachment.json"

    def ensure(self) -> None:
        for directory in (self.root, self.cache.root, self.units.root):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    # ------------------------------------------------------------------ attachment

    def load_attachment(self) -> Attachment | None:
        try:
            return Attachment.model_validate_json(self.attachment_path.read_bytes())
        except FileNotFoundError:
            return None

    def require_attachment(self) -> Attachment:
        attachment = self.load_attachment()
        if attachment is None:
            raise NotAttached(
                f"{self.root} is not attached to a server: run 'yadml-client attach URL'"
            )
        return attachment

    def save_attachment(self, attachment: Attachment) -> None:
        self.ensure()
        atomic_write(self.attachment_path, attachment.model_dump_json(indent=2), mode=0o600)

    def remove_attachment(self) -> bool:
        try:
            self.attachment_path.unlink()
        except FileNotFoundError:
            return False
        return True

    # ------------------------------------------------------------------ lock

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``<state-dir>/lock`` exclusively; :class:`StateLocked` if someone else does."""
        self.ensure()
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise StateLocked(
                        f"{self.root} is in use by another yadml-client process"
                    ) from exc
                raise
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
