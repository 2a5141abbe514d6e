"""The VM driver interface, shared by :mod:`.qemu` and :mod:`.virtualbox`.

A driver boots the YADML VM image (``images/vm``) once per unit and returns when the guest
has powered off or the time limit has passed. The executor (:mod:`.executor`) prepares what
the guest sees and reads what it leaves:

* ``input_disk``: a raw disk that is a tar archive (task, shard, weights, threads), attached
  read-only where the hypervisor allows it;
* ``output_disk``: a raw, sparse, zero-filled disk the guest writes its outputs to (a tar);
* ``console_log``: the guest's first serial port (kernel messages and the trainer's output);
* ``status_log``: its second serial port, one line per event: ``YADML READY <uptime>``,
  ``YADML PROGRESS <0..1>``, ``YADML EXIT <status> <uptime>``, ``YADML FAIL <reason>``.

Whatever a driver creates for a unit (an overlay or differencing disk, a registered VM, a
process) is named with :attr:`VmRun.name`, which starts with the client's prefix
(:func:`vm_prefix`), and is removed before :meth:`VmDriver.execute` returns or raises, on
success, failure, time-out and cancellation alike. :meth:`VmDriver.cleanup` removes what a
killed earlier client left, found by that prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import ExecutionFailed

__all__ = [
    "DiskFormat",
    "StatusLine",
    "VmDriver",
    "VmExit",
    "VmRun",
    "find_tool",
    "parse_status",
    "vm_prefix",
]

DiskFormat = str  # "qcow2" (QEMU) or "vdi" (VirtualBox): a key of the manifest's "files"

#: The first part of every VM, overlay and run directory name this software creates.
NAME_PREFIX = "yadml-vm"


def vm_prefix(client_id: str) -> str:
    """``yadml-vm-<client id>-``: what this client's VMs (and their files) are named with."""
    return f"{NAME_PREFIX}-{client_id[:16]}-"


def find_tool(name: str, configured: Sequence[str] | None = None) -> list[str] | None:
    """The command to run ``name`` (a configured one wins), or None when it is not found."""
    if configured:
        return list(configured)
    found = shutil.which(name)
    return [found] if found else None


@dataclass(frozen=True)
class VmRun:
    """One boot of the VM for one unit. Paths are absolute and under ``run_dir``."""

    name: str
    run_dir: Path
    base_image: Path
    input_disk: Path
    output_disk: Path
    console_log: Path
    status_log: Path
    memory_mb: int
    cpus: int
    timeout_s: float | None


@dataclass(frozen=True)
class VmExit:
    """How a boot ended: the guest powered off (``timed_out`` False) or was stopped."""

    timed_out: bool
    elapsed_s: float
    detail: str = ""


@dataclass(frozen=True)
class StatusLine:
    event: str
    values: tuple[str, ...]


def parse_status(text: str) -> list[StatusLine]:
    """The ``YADML ...`` lines of a status log (anything else is ignored)."""
    lines = []
    for raw in text.splitlines():
        parts = raw.strip().split()
        if len(parts) >= 2 and parts[0] == "YADML":
            lines.append(StatusLine(parts[1], tuple(parts[2:8])))
    return lines


class VmDriver(ABC):
    """Boots one VM per unit with one hypervisor; see the module docstring."""

    #: ``qemu`` or ``virtualbox``
    name: str = ""
    #: which of the manifest's files this driver boots
    disk_format: DiskFormat = ""

    def __init__(self, *, prefix: str) -> None:
        self.prefix = prefix

    @abstractmethod
    def usable(self) -> tuple[bool, str]:
        """Whether this driver can boot VMs here, and why not. Blocking, may be slow once."""

    @abstractmethod
    def cleanup(self, spool: Path) -> int:
        """Remove this client's leftover VMs, processes and disks (a killed client's).
        Returns how many things were removed. Blocking."""

    @abstractmethod
    async def execute(self, run: VmRun) -> VmExit:
        """Boot ``run`` and wait for the guest to power off or the time limit to pass.

        Raises :class:`~volunteer_client.errors.ExecutionFailed` (``executor_error``) when
        the VM cannot be created or started. Leaves nothing behind but ``run``'s output
        disk and logs."""

    def describe(self) -> str:
        """One line for logs and the benchmark (e.g. the accelerator in use)."""
        return self.name


async def run_command(
    argv: Sequence[str], *, timeout_s: float = 120.0, check: bool = True
) -> tuple[int, str]:
    """Run a short tool command (``qemu-img``, ``VBoxManage``); ``(status, output)``.

    A missing tool, a time-out, or (with ``check``) a non-zero status raises
    ``ExecutionFailed("executor_error")``; the child is killed if the caller is cancelled."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        raise ExecutionFailed("executor_error", f"cannot run {argv[0]}: {exc}") from exc
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout_s)
    except TimeoutError:
        kill_quietly(proc)
        await proc.wait()
        raise ExecutionFailed(
            "executor_error", f"{' '.join(argv[:3])} did not finish in {timeout_s:.0f} s"
        ) from None
    finally:
        if proc.returncode is None:
            kill_quietly(proc)
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
    text = out.decode("utf-8", "replace")
    if check and proc.returncode != 0:
        raise ExecutionFailed(
            "executor_error",
            f"{' '.join(str(a) for a in argv[:4])} failed ({proc.returncode}): {text[-2000:]}",
        )
    return proc.returncode or 0, text


def kill_quietly(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def remove_paths(paths: Sequence[Path], remove: Callable[[Path], None] | None = None) -> int:
    """Delete files and directories; how many existed."""
    removed = 0
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        elif path.exists() or path.is_symlink():
            (remove or os.unlink)(path)
            removed += 1
    return removed
