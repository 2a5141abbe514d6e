"""The unit's disks: inputs as a tar archive on a raw disk, outputs read back from one.

No file system is made or mounted on the host (that would need root, or tools VirtualBox
hosts lack): the input disk *is* a ustar archive (sizes are multiples of 512 bytes, as
disks need), and the guest writes its outputs as a tar archive onto the zero-filled output
disk. The output disk comes from the guest, so it is read like any untrusted input: only
the regular files named in :data:`OUTPUT_NAMES` are taken, each with a size limit, nothing
is extracted, and links or other members are ignored.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from yadml_common.wire import TaskConfig

__all__ = [
    "OUTPUT_NAMES",
    "GuestOutputs",
    "make_output_disk",
    "read_output_disk",
    "write_input_disk",
]

OUTPUT_WEIGHTS = "output.safetensors"
OUTPUT_NAMES = ("exit", "progress", OUTPUT_WEIGHTS)
#: Room on the output disk beyond twice the input weights (tar headers, the report).
OUTPUT_SLACK_BYTES = 8 << 20
_SMALL = 64


def write_input_disk(
    path: Path, *, shard: Path, weights: Path, task: TaskConfig, threads: int
) -> int:
    """Write the input disk (a ustar archive, padded to whole MiB); its size in bytes."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
        archive.add(shard, "shard.safetensors", recursive=False)
        archive.add(weights, "weights.safetensors", recursive=False)
        for name, data in (
            ("task.json", task.model_dump_json(indent=2).encode()),
            ("threads", f"{threads}\n".encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    size = path.stat().st_size
    padded = -(-size // (1 << 20)) * (1 << 20)
    os.truncate(path, padded)
    return padded


def make_output_disk(path: Path, *, weights_bytes: int) -> int:
    """A sparse zero-filled raw disk big enough for the outputs; its size in bytes."""
    size = -(-(2 * weights_bytes + OUTPUT_SLACK_BYTES) // (1 << 20)) * (1 << 20)
    with open(path, "wb") as f:
        f.truncate(size)
    return size


@dataclass
class GuestOutputs:
    """What the guest left on the output disk."""

    exit_status: int | None = None
    progress: str | None = None
    weights: Path | None = None
    problems: list[str] = field(default_factory=list)


def read_output_disk(path: Path, *, weights_dest: Path, max_weights_bytes: int) -> GuestOutputs:
    """Read the guest's archive from the output disk. Never raises on bad content: what
    cannot be used is listed in ``problems``."""
    found = GuestOutputs()
    try:
        with open(path, "rb") as raw:
            if raw.read(512).count(0) == 512:
                found.problems.append("the output disk is empty (the guest wrote nothing)")
                return found
            raw.seek(0)
            with tarfile.open(fileobj=raw, mode="r:") as archive:
                for member in archive:
                    name = member.name.removeprefix("./")
                    if name not in OUTPUT_NAMES or not member.isreg():
                        continue
                    limit = max_weights_bytes if name == OUTPUT_WEIGHTS else _SMALL
                    if member.size > limit:
                        found.problems.append(f"{name}: {member.size} bytes (limit {limit})")
                        continue
                    data = archive.extractfile(member)
                    if data is None:
                        continue
                    if name == OUTPUT_WEIGHTS:
                        tmp = weights_dest.with_name(f".{weights_dest.name}.tmp")
                        with open(tmp, "wb") as out:
                            while chunk := data.read(1 << 20):
                                out.write(chunk)
                        os.replace(tmp, weights_dest)
                        found.weights = weights_dest
                    elif name == "exit":
                        text = data.read(_SMALL).decode("ascii", "replace").strip()
                        found.exit_status = int(text) if text.isdigit() else None
                    else:
                        found.progress = data.read(_SMALL).decode("ascii", "replace").strip()
    except (OSError, tarfile.TarError, EOFError) as exc:
        found.problems.append(f"unreadable output disk: {exc}")
    return found
