"""``VmExecutor``: each unit in a fresh VM of the YADML VM image, through a driver.

For one unit the executor makes a run directory ``<spool>/<prefix><unit>-<random>`` with
the input disk (a tar of the task, shard, weights and thread count), an empty output disk,
and the two serial logs; the driver (:mod:`.qemu` or :mod:`.virtualbox`) boots the image's
file (checked against its manifest, :mod:`.disk_image_store`) over a per-unit
copy-on-write layer and waits for the guest to power off. The executor then reads the
output disk (:mod:`.disks`) and maps what happened onto the client's failure reasons with
:func:`~..base.classify_exit`:

* past the time limit: ``timeout`` (the driver stops the VM and removes its disks);
* exit status 0 and weights: success; 2: ``invalid_input``; status 137 (in the guest only its
  OOM killer sends SIGKILL) or the guest kernel's OOM messages on the console:
  ``out_of_memory``; anything else, or a guest that powered off without a status:
  ``crash``; a VM that cannot be created or started: ``executor_error``.

The run directory is deleted afterwards in every case; :meth:`VmExecutor.cleanup` (run
before the first unit, and by the client at start, :meth:`VmExecutor.prepare`) removes what
a killed client left.
Progress lines from the guest are relayed to the unit's progress file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ...errors import ExecutionFailed
from ..base import ExecutionRequest, ExecutionResult, Executor, classify_exit
from ..trainer_files import read_tail
from .base import VmDriver, VmRun, parse_status, vm_prefix
from .disk_image_store import VmImageStore
from .disks import read_output_disk

__all__ = ["VmExecutor", "VmOptions", "make_driver", "probe_driver"]

log = logging.getLogger(__name__)

STATUS_POLL_S = 0.1
#: The trainer's status when the guest's OOM killer took it (128 + SIGKILL): nothing else
#: in the guest sends SIGKILL.
GUEST_OOM_STATUS = 137


@dataclass(frozen=True)
class VmOptions:
    """The volunteer's choices for the VM executor.

    ``driver``: ``auto``, ``qemu`` or ``virtualbox``; ``client_id``: names this client's VMs
    (:func:`vm_prefix`); ``image_dir``: where the images and manifests are (default
    :func:`.disk_image_store.default_image_dir`); ``spool_dir``: where run directories go
    (default: a temporary directory); ``memory_mb``/``cpus``: the VM's size (``cpus`` None:
    the unit's thread count)."""

    driver: str = "auto"
    client_id: str = "default"
    image_dir: Path | None = None
    spool_dir: Path | None = None
    memory_mb: int = 2048
    cpus: int | None = None


def make_driver(name: str, *, prefix: str) -> VmDriver:
    """``qemu``, ``virtualbox`` or ``auto`` (the first usable, QEMU first)."""
    from .qemu import QemuDriver
    from .virtualbox import VirtualBoxDriver

    if name == "qemu":
        return QemuDriver(prefix=prefix)
    if name == "virtualbox":
        return VirtualBoxDriver(prefix=prefix)
    if name != "auto":
        raise ValueError(f"unknown VM driver {name!r} (qemu, virtualbox, auto)")
    reasons = []
    candidates: list[VmDriver] = [QemuDriver(prefix=prefix), VirtualBoxDriver(prefix=prefix)]
    for driver in candidates:
        ok, why = driver.usable()
        if ok:
            return driver
        reasons.append(f"{driver.name}: {why}")
    raise ExecutionFailed("executor_error", "no VM driver is usable: " + "; ".join(reasons))


def probe_driver() -> str:
    """Whether this computer can run VMs: the usable driver's description, or
    ``ExecutionFailed`` (``executor_error``) saying why none is."""
    return make_driver("auto", prefix="yadml-vm-probe-").describe()


class VmExecutor(Executor):
    """Run the trainer in a VM; see the module docstring.

    ``driver``: a :class:`VmDriver` to use instead of the one ``options.driver`` names
    (tests, benchmarks)."""

    runtime = "vm"

    def __init__(self, options: VmOptions | None = None, *, driver: VmDriver | None = None) -> None:
        self.options = options = options or VmOptions()
        self.client_id = options.client_id
        self.prefix = vm_prefix(options.client_id)
        self._driver = driver
        self._driver_name = options.driver if driver is None else driver.name
        self.images = VmImageStore(options.image_dir)
        self.spool_dir = options.spool_dir
        self.memory_mb = options.memory_mb
        self.cpus = options.cpus
        self._cleaned = False
        self._lock = asyncio.Lock()
        #: timings of the last unit: ``ready_s`` (VM start to trainer start), ``total_s``
        self.last_timings: dict[str, float] = {}

    @property
    def driver(self) -> VmDriver:
        if self._driver is None:
            self._driver = make_driver(self._driver_name, prefix=self.prefix)
        return self._driver

    def _spool(self) -> Path:
        if self.spool_dir is None:
            self.spool_dir = Path(tempfile.mkdtemp(prefix="yadml-vm-"))
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        return self.spool_dir

    def cleanup(self) -> int:
        """Remove this client's leftover VMs and run directories. Blocking."""
        removed = self.driver.cleanup(self._spool())
        if removed:
            log.info("removed %d leftover VM(s)/run dir(s) of this client", removed)
        self._cleaned = True
        return removed

    async def _check_usable(self, driver: VmDriver) -> None:
        ok, why = await asyncio.to_thread(driver.usable)
        if not ok:
            raise ExecutionFailed("executor_error", f"VM driver {driver.name}: {why}")

    async def prepare(self) -> None:
        """Stop the client (``executor_error``) when the driver cannot boot VMs here; else
        remove this client's leftover VMs (a failure to is only logged)."""
        await self._check_usable(self.driver)
        try:
            await asyncio.to_thread(self.cleanup)
        except ExecutionFailed as exc:
            log.warning("%s", exc.detail)

    async def _prepare(self) -> VmDriver:
        async with self._lock:
            driver = self.driver
            if not self._cleaned:
                await self._check_usable(driver)
                await asyncio.to_thread(self.cleanup)
        return driver

    async def run(self, request: ExecutionRequest) -> ExecutionResult:
        from .disks import make_output_disk, write_input_disk

        driver = await self._prepare()
        image = await asyncio.to_thread(self.images.find, request.image, driver.disk_format)
        request.output_path.unlink(missing_ok=True)
        threads = request.threads or 1
        run_dir = self._spool() / f"{self.prefix}{request.work_dir.name}-{uuid.uuid4().hex[:6]}"
        run_dir.mkdir(mode=0o700)
        run = VmRun(
            name=run_dir.name,
            run_dir=run_dir,
            base_image=image.path,
            input_disk=run_dir / "input.tar",
            output_disk=run_dir / "output.raw",
            console_log=run_dir / "console.log",
            status_log=run_dir / "status.log",
            memory_mb=self.memory_mb,
            cpus=self.cpus or threads,
            timeout_s=request.timeout_s,
        )
        try:
            weights_bytes = request.weights_path.stat().st_size
            await asyncio.to_thread(
                write_input_disk,
                run.input_disk,
                shard=request.shard_path,
                weights=request.weights_path,
                task=request.task,
                threads=threads,
            )
            make_output_disk(run.output_disk, weights_bytes=weights_bytes)
            run.console_log.touch()
            run.status_log.touch()
            started = time.monotonic()
            watch = asyncio.create_task(self._watch(run, request.progress_path, started))
            try:
                ended = await driver.execute(run)
            finally:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
            return await asyncio.to_thread(self._result, request, run, ended.timed_out, started)
        finally:
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, run_dir, True))

    async def _watch(self, run: VmRun, progress: Path | None, started: float) -> None:
        """Note when the trainer starts and relay the guest's progress lines."""
        last = None
        self.last_timings = {}
        while True:
            await asyncio.sleep(STATUS_POLL_S)
            try:
                text = run.status_log.read_text("utf-8", "replace")
            except OSError:
                continue
            for line in parse_status(text):
                if line.event == "READY" and "ready_s" not in self.last_timings:
                    self.last_timings["ready_s"] = time.monotonic() - started
                    log.info(
                        "%s: trainer started %.1f s after the VM",
                        run.name,
                        self.last_timings["ready_s"],
                    )
                if line.event == "PROGRESS" and line.values and progress is not None:
                    value = line.values[0]
                    if value != last:
                        last = value
                        with contextlib.suppress(OSError):
                            tmp = progress.with_name(f".{progress.name}.tmp")
                            tmp.write_text(f"{value}\n")
                            os.replace(tmp, progress)

    def _result(
        self, request: ExecutionRequest, run: VmRun, timed_out: bool, started: float
    ) -> ExecutionResult:
        elapsed = time.monotonic() - started
        self.last_timings["total_s"] = elapsed
        console = read_tail(run.console_log)
        if timed_out:
            failure = classify_exit(
                None, timed_out=True, time_limit_s=request.timeout_s, log_tail=console
            )
            assert failure is not None
            raise failure
        status = parse_status(run.status_log.read_text("utf-8", "replace"))
        fails = [" ".join(s.values) for s in status if s.event == "FAIL"]
        limit = 2 * request.weights_path.stat().st_size + (1 << 20)
        outputs = read_output_disk(
            run.output_disk, weights_dest=request.output_path, max_weights_bytes=limit
        )
        code = outputs.exit_status
        if code is None:
            exits = [s.values[0] for s in status if s.event == "EXIT" and s.values]
            code = int(exits[-1]) if exits and exits[-1].isdigit() else None
        problems = "; ".join([*fails, *outputs.problems])
        if code is None:
            ended = "the VM stopped without an exit status"
            problems = f"{ended} ({problems})" if problems else ended
        failure = classify_exit(
            code,
            log_tail=console,
            oom_killed=code == GUEST_OOM_STATUS,
            output_written=outputs.weights is not None,
            memory_limit_mb=self.memory_mb,
            context=problems,
        )
        if failure is not None:
            request.output_path.unlink(missing_ok=True)
            raise failure
        if request.progress_path is not None:
            with contextlib.suppress(OSError):
                request.progress_path.write_text("1.0\n")
        return ExecutionResult(output_path=request.output_path, elapsed_s=elapsed, log_tail=console)
