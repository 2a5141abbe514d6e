"""The files around one trainer run, as every executor handles them.

* :func:`trainer_args`: the trainer's command line (``python -m yadml_trainer.trainer``
  takes it, and so does a warm loop's ``request.json``);
* :func:`write_task`: the unit's ``task.json``;
* log tails: the last :data:`LOG_TAIL_BYTES` of a stream, file or text, sent with a failure;
* files a worker wrote where it could also have planted a link (a container's output
  directory): :func:`read_small` and :func:`take_regular_file` never follow one;
* :func:`relay_progress`: copies a progress file the daemon cannot see into the unit's own.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from pathlib import Path

from yadml_common.fsutil import atomic_write

from .base import ExecutionRequest

__all__ = [
    "LOG_TAIL_BYTES",
    "TASK_NAME",
    "THREAD_VARS",
    "TailBuffer",
    "copy_progress",
    "host_trainer_args",
    "read_small",
    "read_tail",
    "relay_progress",
    "tail_text",
    "take_regular_file",
    "trainer_args",
    "write_task",
]

#: How much of a run's output goes with its result or failure report.
LOG_TAIL_BYTES = 4096
TASK_NAME = "task.json"
#: The numeric libraries' thread-count variables, set to the unit's thread count.
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
#: How often a progress file the daemon cannot see is copied into the unit's own.
PROGRESS_INTERVAL_S = 0.5


def trainer_args(
    *,
    shard: str,
    weights: str,
    task: str,
    output: str,
    threads: int | None = None,
    progress: str | None = None,
) -> list[str]:
    """``--shard S --weights W --task T --output O [--threads N] [--progress P]``, with the
    paths as the trainer sees them (inside a container they differ from the host's)."""
    args = ["--shard", shard, "--weights", weights, "--task", task, "--output", output]
    if threads is not None:
        args += ["--threads", str(threads)]
    if progress is not None:
        args += ["--progress", progress]
    return args


def host_trainer_args(request: ExecutionRequest, task: Path) -> list[str]:
    """:func:`trainer_args` for a trainer that sees the host's own paths (a process)."""
    return trainer_args(
        shard=str(request.shard_path),
        weights=str(request.weights_path),
        task=str(task),
        output=str(request.output_path),
        threads=request.threads,
        progress=None if request.progress_path is None else str(request.progress_path),
    )


def write_task(request: ExecutionRequest, directory: Path) -> Path:
    """The unit's task as ``directory/task.json`` (the trainer's ``--task``)."""
    path = directory / TASK_NAME
    path.write_text(request.task.model_dump_json(indent=2))
    return path


def tail_text(data: bytes | str, limit: int = LOG_TAIL_BYTES) -> str:
    """The last ``limit`` bytes of ``data`` as text."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return raw[-limit:].decode("utf-8", "replace")


def read_tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    """The last ``limit`` bytes of the regular file at ``path``, never following a link (a
    container writes its log where it could plant one to a file of the client's); "" when
    it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        os.lseek(fd, max(0, os.fstat(fd).st_size - limit), os.SEEK_SET)
        return os.read(fd, limit).decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


class TailBuffer:
    """The last ``limit`` bytes of a stream (a child's merged stdout and stderr)."""

    def __init__(self, limit: int = LOG_TAIL_BYTES) -> None:
        self.limit = limit
        self.data = bytearray()

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(1 << 14):
            self.data += chunk
            if len(self.data) > self.limit:
                del self.data[: len(self.data) - self.limit]

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def read_small(path: Path, limit: int = 256) -> str | None:
    """A small regular file's text, never following a link; None when absent or odd."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode("utf-8", "replace")
    finally:
        os.close(fd)


def take_regular_file(src: Path, dest: Path) -> bool:
    """Move ``src`` (a regular file, not a link) to ``dest``; False if it is not one."""
    try:
        st = os.lstat(src)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    dest.unlink(missing_ok=True)
    try:
        os.replace(src, dest)
    except OSError:
        shutil.copyfile(src, dest, follow_symlinks=False)
    return True


def copy_progress(src: Path, dest: Path, last: str | None = None) -> str | None:
    """Copy the progress value in ``src`` to ``dest`` when it changed from ``last``; returns
    the value now in ``dest``."""
    text = read_small(src, 64)
    if text is not None and text != last:
        atomic_write(dest, text, mode=0o644, fsync=False)
        return text
    return last


async def relay_progress(src: Path, dest: Path | None) -> None:
    """Copy ``src`` to ``dest`` whenever it changes, until cancelled."""
    if dest is None:
        return
    last = None
    while True:
        last = copy_progress(src, dest, last)
        await asyncio.sleep(PROGRESS_INTERVAL_S)
