"""The files of a unit in its directory (``units/<id>/`` of the state directory): the
inputs linked from the blob cache, the executor's output, and the trainer's progress file.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

__all__ = ["OUTPUT_NAME", "PROGRESS_NAME", "link_or_copy", "read_progress"]

#: The executor writes the trained weights here; its presence means training finished.
OUTPUT_NAME = "output.safetensors"
#: The trainer rewrites its progress here; heartbeats read it.
PROGRESS_NAME = "progress"


def read_progress(path: Path) -> float:
    """The trainer's progress file as a fraction in [0, 1]; 0 when absent or unreadable.

    Accepts a bare number (``0.42``) or a JSON object with ``fraction_done`` (or
    ``fraction``/``progress``).
    """
    try:
        text = path.read_text().strip()
    except OSError:
        return 0.0
    try:
        value: object = json.loads(text)
    except ValueError:
        return 0.0
    if isinstance(value, dict):
        value = next(
            (value[k] for k in ("fraction_done", "fraction", "progress") if k in value), 0.0
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    fraction = float(value)
    if fraction != fraction:  # NaN
        return 0.0
    return min(1.0, max(0.0, fraction))


def link_or_copy(src: Path, dest: Path) -> None:
    """Put ``src`` (a cached blob) at ``dest`` atomically: a hard link, else a copy.

    A hard link keeps the blob's bytes alive for the unit even if the cache evicts it.
    """
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
