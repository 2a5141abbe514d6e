"""``VirtualBoxDriver``: one headless VirtualBox VM per unit, through ``VBoxManage``.

Tested here only against a recorded fake ``VBoxManage``
(``tests/volunteer_client/executors/fake_vboxmanage.py``): VirtualBox is not in Debian. The
manual procedure for a machine with VirtualBox is in ``images/vm/README.md``.

* The base image (the manifest's VDI) is registered once and made ``multiattach``, so
  VirtualBox never writes it; each unit gets its own differencing disk
  (``createmedium --diffparent``), never a copy of the base.
* The inputs: the raw tar is converted to a VDI (``convertfromraw``); the outputs: an empty
  VDI (``createmedium --sizebyte``) that is cloned back to raw after the guest powers off.
* ``--nic1 none`` (no network adapter), two UARTs to files (console, status), ``startvm
  --type headless``. Completion: ``showvminfo --machinereadable`` is asked for ``VMState``
  once a second until ``poweroff`` (or ``aborted``) or the time limit; never a log.
* Teardown on success, failure, time-out and cancellation: ``controlvm poweroff`` if
  needed, ``unregistervm --delete`` (the VM and its attached disks: the differencing,
  input and output disks), then ``closemedium --delete`` for any of them still registered.
* After a client restart, :meth:`VirtualBoxDriver.cleanup` powers off and unregisters every
  VM whose name starts with this client's prefix (``list vms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from ...errors import ExecutionFailed
from .base import VmDriver, VmExit, VmRun, find_tool, remove_paths, run_command

__all__ = ["VirtualBoxDriver", "parse_list_vms", "parse_machinereadable"]

log = logging.getLogger(__name__)

_VM_LINE = re.compile(r'^"(?P<name>.*)" \{(?P<uuid>[0-9a-fA-F-]{36})\}$')
_DONE_STATES = ("poweroff", "aborted", "saved")


def parse_list_vms(text: str) -> list[tuple[str, str]]:
    """``VBoxManage list vms`` -> ``[(name, uuid)]``."""
    found = []
    for line in text.splitlines():
        match = _VM_LINE.match(line.strip())
        if match:
            found.append((match.group("name"), match.group("uuid")))
    return found


def parse_machinereadable(text: str) -> dict[str, str]:
    """``key="value"`` / ``key=value`` lines of ``showvminfo --machinereadable``."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip().strip('"')] = value.strip().strip('"')
    return values


class VirtualBoxDriver(VmDriver):
    """Boot units with VirtualBox; ``vboxmanage``: the command (default ``VBoxManage``);
    ``poll_s``: how often the VM state is asked for."""

    name = "virtualbox"
    disk_format = "vdi"

    def __init__(
        self,
        *,
        prefix: str,
        vboxmanage: Sequence[str] | None = None,
        poll_s: float = 1.0,
        command_timeout_s: float = 120.0,
    ) -> None:
        super().__init__(prefix=prefix)
        self.vboxmanage = find_tool("VBoxManage", vboxmanage)
        self.poll_s = poll_s
        self.command_timeout_s = command_timeout_s
        self._base_ready: set[Path] = set()

    def _cmd(self, *args: str) -> list[str]:
        if self.vboxmanage is None:
            raise ExecutionFailed("executor_error", "VBoxManage is not installed")
        return [*self.vboxmanage, *args]

    async def _vbox(self, *args: str, check: bool = True) -> str:
        _, out = await run_command(self._cmd(*args), timeout_s=self.command_timeout_s, check=check)
        return out

    def usable(self) -> tuple[bool, str]:
        if self.vboxmanage is None:
            return False, "VBoxManage is not installed (VirtualBox is not in Debian)"
        try:
            done = subprocess.run(
                [*self.vboxmanage, "--version"], capture_output=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"VBoxManage --version failed: {exc}"
        if done.returncode != 0:
            return False, f"VBoxManage --version: {done.stdout.decode(errors='replace')[-300:]}"
        return True, ""

    # ------------------------------------------------------------------ one unit

    async def _base(self, base: Path) -> None:
        """Register the base VDI once as multiattach (VirtualBox never writes it)."""
        if base in self._base_ready:
            return
        info = await self._vbox("showmediuminfo", "disk", str(base), check=False)
        kind = re.search(r"^Type:\s*(\S+)", info, re.MULTILINE)
        if kind is None or kind.group(1).lower() != "multiattach":
            await self._vbox("modifymedium", "disk", str(base), "--type", "multiattach")
        self._base_ready.add(base)

    async def execute(self, run: VmRun) -> VmExit:
        folder = run.run_dir / "vbox"
        diff = folder / f"{run.name}-root.vdi"
        in_vdi = folder / f"{run.name}-input.vdi"
        out_vdi = folder / f"{run.name}-output.vdi"
        created = False
        try:
            await self._base(run.base_image)
            await self._vbox(
                "createvm", "--name", run.name, "--ostype", "Linux_64",
                "--basefolder", str(folder), "--register",
            )  # fmt: skip
            created = True
            await self._vbox(
                "modifyvm", run.name,
                "--memory", str(run.memory_mb), "--cpus", str(run.cpus),
                "--nic1", "none", "--acpi", "on", "--ioapic", "on",
                "--boot1", "disk", "--boot2", "none", "--boot3", "none", "--boot4", "none",
                "--uart1", "0x3F8", "4", "--uartmode1", "file", str(run.console_log),
                "--uart2", "0x2F8", "3", "--uartmode2", "file", str(run.status_log),
            )  # fmt: skip
            await self._vbox(
                "storagectl", run.name, "--name", "SATA", "--add", "sata",
                "--controller", "IntelAhci", "--portcount", "3", "--bootable", "on",
            )  # fmt: skip
            await self._vbox(
                "createmedium", "disk", "--filename", str(diff),
                "--diffparent", str(run.base_image), "--format", "VDI",
            )  # fmt: skip
            await self._vbox("convertfromraw", str(run.input_disk), str(in_vdi), "--format", "VDI")
            size = run.output_disk.stat().st_size
            await self._vbox(
                "createmedium", "disk", "--filename", str(out_vdi),
                "--sizebyte", str(size), "--format", "VDI",
            )  # fmt: skip
            for port, disk in enumerate((diff, in_vdi, out_vdi)):
                await self._vbox(
                    "storageattach", run.name, "--storagectl", "SATA",
                    "--port", str(port), "--device", "0", "--type", "hdd", "--medium", str(disk),
                )  # fmt: skip
            started = time.monotonic()
            await self._vbox("startvm", run.name, "--type", "headless")
            if not await self._wait_poweroff(run.name, started, run.timeout_s):
                return VmExit(
                    timed_out=True,
                    elapsed_s=time.monotonic() - started,
                    detail=f"VM powered off after the time limit of {run.timeout_s or 0:.1f} s",
                )
            await self._vbox(
                "clonemedium",
                "disk",
                str(out_vdi),
                str(run.output_disk) + ".out",
                "--format",
                "RAW",
            )
            await asyncio.to_thread(Path(str(run.output_disk) + ".out").replace, run.output_disk)
            return VmExit(timed_out=False, elapsed_s=time.monotonic() - started)
        finally:
            if created:
                await asyncio.shield(self._teardown(run.name, (diff, in_vdi, out_vdi)))

    async def _state(self, name: str) -> str:
        info = parse_machinereadable(await self._vbox("showvminfo", name, "--machinereadable"))
        return info.get("VMState", "")

    async def _wait_poweroff(self, name: str, started: float, timeout_s: float | None) -> bool:
        """True when the VM powered off by itself, False at the time limit."""
        while True:
            if await self._state(name) in _DONE_STATES:
                return True
            if timeout_s is not None and time.monotonic() - started >= timeout_s:
                return False
            await asyncio.sleep(self.poll_s)

    async def _teardown(self, name: str, disks: Sequence[Path]) -> None:
        """Power off (if running), unregister and delete the VM and its per-unit disks."""
        with contextlib.suppress(ExecutionFailed):
            if await self._state(name) not in _DONE_STATES:
                await self._vbox("controlvm", name, "poweroff", check=False)
        with contextlib.suppress(ExecutionFailed):
            await self._vbox("unregistervm", name, "--delete", check=False)
        for disk in disks:
            if disk.exists():
                with contextlib.suppress(ExecutionFailed):
                    await self._vbox("closemedium", "disk", str(disk), "--delete", check=False)
        remove_paths([d for d in disks if d.exists()])

    # ------------------------------------------------------------------ leftovers

    def cleanup(self, spool: Path) -> int:
        if self.vboxmanage is None:
            return 0
        try:
            listed = subprocess.run(
                self._cmd("list", "vms"), capture_output=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("VBoxManage list vms failed: %s", exc)
            return 0
        removed = 0
        for name, uuid in parse_list_vms(listed.stdout.decode("utf-8", "replace")):
            if not name.startswith(self.prefix):
                continue
            for args in (("controlvm", uuid, "poweroff"), ("unregistervm", uuid, "--delete")):
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    subprocess.run(self._cmd(*args), capture_output=True, timeout=120, check=False)
            log.info("removed leftover VirtualBox VM %s", name)
            removed += 1
        if spool.is_dir():
            removed += remove_paths(sorted(spool.glob(f"{self.prefix}*")))
        return removed
