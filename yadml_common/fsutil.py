"""Atomic file writes, shared by the server, the client and the trainer.

A reader (another process, or this one after a crash) sees either the old file or the whole
new one, never a partial write: the bytes go to a temporary file in the same folder (so the
final rename stays on one file system), are flushed to disk, then renamed over the target.
Only the standard library: the trainer runs this inside the worker image and the VM.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(
    path: Path, *, mode: int | None = None, exclusive: bool = False, fsync: bool = True
) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for the caller to write (for writers that
    want a file name, e.g. ``safetensors.torch.save_file``); when the block ends without an
    exception, move it onto ``path``. On any exception the temporary file is removed and
    ``path`` is untouched.

    ``mode``: the file's permissions, set before any byte is written (default 0600, as
    :func:`tempfile.mkstemp` creates it: secrets are never world-readable, even briefly).
    ``exclusive``: never replace an existing ``path`` (:class:`FileExistsError`), so
    processes racing to create the same file all end up with the first one's.
    ``fsync``: flush the bytes to disk before the rename (off for files that are rewritten
    every fraction of a second and are worthless after a crash, such as progress files).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
        finally:
            os.close(fd)
        yield tmp
        if fsync:
            _fsync(tmp)
        if exclusive:
            os.link(tmp, path)  # fails when path exists, unlike a rename
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(
    path: Path,
    data: bytes | str,
    *,
    mode: int | None = None,
    exclusive: bool = False,
    fsync: bool = True,
) -> None:
    """Write ``data`` (``str`` as UTF-8) to ``path`` atomically; the keyword arguments are
    :func:`atomic_output`'s."""
    raw = data.encode() if isinstance(data, str) else data
    with atomic_output(path, mode=mode, exclusive=exclusive, fsync=fsync) as tmp:
        tmp.write_bytes(raw)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
