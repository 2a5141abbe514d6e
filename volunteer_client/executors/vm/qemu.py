"""``QemuDriver``: one ``qemu-system-x86_64`` process per unit.

* KVM when it works here, else TCG (software emulation). ``/dev/kvm`` being openable is not
  enough (nested set-ups fail at the first vCPU reset), so :meth:`QemuDriver.usable` starts
  a paused machine with ``-accel kvm`` once and asks it to quit; if that fails, TCG is used.
* The shared base image (the manifest's qcow2) is never written: each unit boots a qcow2
  copy-on-write overlay in its run directory (``qemu-img create -b``), deleted afterwards.
* No network device (``-nic none``, ``-nodefaults``), no display, ``-no-reboot`` (a guest
  panic ends the process), QEMU's seccomp sandbox where it is built in; the input disk is
  read-only, the output disk raw; two serial ports to files (console, status).
* Past the time limit, or on cancellation, the process is killed (SIGKILL) and waited for.
  Every VM is named ``<prefix><unit>`` (``-name``); after a client restart
  :meth:`QemuDriver.cleanup` kills QEMU processes with this client's prefix and deletes the
  run directories they used.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from ...errors import ExecutionFailed
from .base import VmDriver, VmExit, VmRun, find_tool, kill_quietly, remove_paths, run_command

__all__ = ["QemuDriver"]

log = logging.getLogger(__name__)

_SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


class QemuDriver(VmDriver):
    """Boot units with QEMU; ``accel``: ``auto`` (KVM if it works, else TCG), ``kvm``, ``tcg``.

    ``qemu``/``qemu_img``: the commands (default: found on ``PATH``); ``cpu``: the ``-cpu``
    model; ``machine``: the ``-machine`` type."""

    name = "qemu"
    disk_format = "qcow2"

    def __init__(
        self,
        *,
        prefix: str,
        accel: str = "auto",
        qemu: Sequence[str] | None = None,
        qemu_img: Sequence[str] | None = None,
        cpu: str = "max",
        machine: str = "q35",
    ) -> None:
        super().__init__(prefix=prefix)
        if accel not in ("auto", "kvm", "tcg"):
            raise ValueError(f"accel must be auto, kvm or tcg, not {accel!r}")
        self.accel_choice = accel
        self.qemu = find_tool("qemu-system-x86_64", qemu)
        self.qemu_img = find_tool("qemu-img", qemu_img)
        self.cpu = cpu
        self.machine = machine
        self._accel: str | None = None
        self._sandbox: bool | None = None

    # ------------------------------------------------------------------ probing

    def _probe(self, *options: str) -> bool:
        """Start a paused machine with ``options`` and quit it; True when it quits cleanly."""
        assert self.qemu is not None
        argv = [*self.qemu, *options, "-machine", self.machine, "-cpu", self.cpu, "-m", "64",
                "-nodefaults", "-display", "none", "-S", "-no-reboot",
                "-monitor", "stdio", "-serial", "none"]  # fmt: skip
        try:
            done = subprocess.run(
                argv, input=b"quit\n", capture_output=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    @property
    def accel(self) -> str:
        """The accelerator units run with (probed once)."""
        if self._accel is None:
            if self.accel_choice != "auto":
                self._accel = self.accel_choice
            elif os.access("/dev/kvm", os.R_OK | os.W_OK) and self._probe("-accel", "kvm"):
                self._accel = "kvm"
            else:
                self._accel = "tcg"
        return self._accel

    def usable(self) -> tuple[bool, str]:
        if self.qemu is None:
            return False, "qemu-system-x86_64 is not installed (Debian: qemu-system-x86)"
        if self.qemu_img is None:
            return False, "qemu-img is not installed (Debian: qemu-utils)"
        if not self._probe("-accel", self.accel):
            return False, f"{self.qemu[0]} cannot start a machine with -accel {self.accel}"
        if self._sandbox is None:
            self._sandbox = self._probe("-accel", self.accel, "-sandbox", _SANDBOX)
        return True, ""

    def describe(self) -> str:
        return f"qemu ({self.accel.upper()})"

    # ------------------------------------------------------------------ one unit

    def command(self, run: VmRun, overlay: Path) -> list[str]:
        assert self.qemu is not None
        argv = [
            *self.qemu,
            "-name", run.name,
            "-accel", self.accel,
            "-machine", self.machine,
            "-cpu", self.cpu,
            "-smp", str(run.cpus),
            "-m", str(run.memory_mb),
            "-nodefaults", "-no-user-config", "-display", "none", "-nic", "none",
            "-no-reboot",
            "-drive", f"file={overlay},format=qcow2,if=virtio,cache=unsafe",
            "-drive", f"file={run.input_disk},format=raw,if=virtio,readonly=on",
            "-drive", f"file={run.output_disk},format=raw,if=virtio",
            "-device", "virtio-rng-pci",
            "-serial", f"file:{run.console_log}",
            "-serial", f"file:{run.status_log}",
        ]  # fmt: skip
        if self._sandbox:
            argv += ["-sandbox", _SANDBOX]
        return argv

    async def execute(self, run: VmRun) -> VmExit:
        if self.qemu is None or self.qemu_img is None:
            raise ExecutionFailed("executor_error", "QEMU is not installed")
        overlay = run.run_dir / f"{run.name}.qcow2"
        await run_command(
            [
                *self.qemu_img,
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                str(run.base_image),
                "-F",
                "qcow2",
                str(overlay),
            ]
        )
        started = time.monotonic()
        proc: asyncio.subprocess.Process | None = None
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self.command(run, overlay),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ExecutionFailed("executor_error", f"cannot start QEMU: {exc}") from exc
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), timeout=run.timeout_s)
            except TimeoutError:
                await self._stop(proc)
                return VmExit(
                    timed_out=True,
                    elapsed_s=time.monotonic() - started,
                    detail=f"VM killed after the time limit of {run.timeout_s or 0:.1f} s",
                )
            text = out.decode("utf-8", "replace").strip()
            if proc.returncode != 0:
                raise ExecutionFailed(
                    "executor_error", f"QEMU exited with status {proc.returncode}: {text[-2000:]}"
                )
            return VmExit(timed_out=False, elapsed_s=time.monotonic() - started, detail=text)
        finally:
            if proc is not None and proc.returncode is None:
                await asyncio.shield(self._stop(proc))
            overlay.unlink(missing_ok=True)

    @staticmethod
    async def _stop(proc: asyncio.subprocess.Process) -> None:
        kill_quietly(proc)
        with contextlib.suppress(Exception):
            await proc.wait()

    # ------------------------------------------------------------------ leftovers

    def _orphans(self) -> list[int]:
        """Pids of QEMU processes whose ``-name`` starts with this client's prefix."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if not argv or not argv[0].endswith(b"qemu-system-x86_64"):
                continue
            for flag, value in itertools.pairwise(argv):
                if flag == b"-name" and value.decode(errors="replace").startswith(self.prefix):
                    pids.append(int(entry.name))
        return pids

    def cleanup(self, spool: Path) -> int:
        removed = 0
        for pid in self._orphans():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                removed += 1
                log.info("killed leftover VM process %d", pid)
        if removed:
            time.sleep(0.2)
        if spool.is_dir():
            removed += remove_paths(sorted(spool.glob(f"{self.prefix}*")))
        return removed
