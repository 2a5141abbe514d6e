"""The client daemon: ask for work, download inputs, run the executor, upload, repeat.

One asyncio task per unit drives it through ``downloading`` -> ``running`` ->
``uploading`` (each step persisted in ``units/<id>/unit.json`` first), so a restarted
client resumes where it stopped: a finished output is uploaded, an unfinished unit whose
deadline has not passed runs again, an expired one is reported ``aborted``. A
heartbeat task reports progress and cancels the units the server no longer wants.

Waiting follows the server: no work -> sleep its ``retry_after_s`` (clamped, with
jitter); unreachable or 5xx -> exponential backoff with full jitter; 429 -> its
``Retry-After``. A 401/403 on asking for work is fatal (:class:`PermanentError`).

With a ``verifier`` (the project keys pinned at attach time), every unit must carry a
valid signature of its manifest by a pinned key before anything is downloaded or run;
a unit that fails is never run and is reported as ``invalid_input``. A unit signed by
an unknown key makes the daemon fetch ``/project`` once and pin keys endorsed by a key
it already trusts (key rotation).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from yadml_common.signing import SignatureError, WorkVerifier
from yadml_common.wire import (
    INPUT_SHARD,
    INPUT_WEIGHTS,
    RunningUnit,
    Runtime,
    WorkInput,
    WorkUnitAssignment,
)

from .api import ServerAPI
from .errors import (
    ExecutionFailed,
    FailureReason,
    IntegrityError,
    PayloadRejected,
    PermanentError,
    Rejected,
    TransientError,
    Unauthorized,
)
from .executors.base import ExecutionRequest, ExecutionResult, Executor
from .state import PendingFailure, StateDir, UnitRecord, UnitStatus, sha256_file

__all__ = ["Backoff", "Daemon", "read_progress"]

log = logging.getLogger(__name__)

OUTPUT_NAME = "output.safetensors"
PROGRESS_NAME = "progress"

Sleep = Callable[[float], Awaitable[None]]


class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**attempt))``."""

    def __init__(
        self,
        *,
        base_s: float = 1.0,
        cap_s: float = 60.0,
        random_fn: Callable[[], float] = random.random,
    ) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.random_fn = random_fn
        self.attempt = 0

    @property
    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return min(self.cap_s, self.base_s * 2.0 ** min(self.attempt, 64))

    def next_delay(self) -> float:
        delay = self.ceiling * self.random_fn()
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


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


def _deadline(assignment: WorkUnitAssignment) -> float:
    deadline: datetime = assignment.deadline
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=UTC)
    return deadline.timestamp()


def _link_or_copy(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


class Daemon:
    """Runs units for one attachment. Dependencies are explicit; see the module docstring.

    ``sleep`` and ``clock`` (UNIX seconds) drive the backoff/polling waits and deadline
    checks, so tests can replace them; the heartbeat runs on real time every
    ``heartbeat_s``. ``min_poll_s``/``max_poll_s`` clamp the server's ``retry_after_s``.
    """

    def __init__(
        self,
        *,
        api: ServerAPI,
        state: StateDir,
        executor: Executor,
        runtimes: Sequence[Runtime] | None = None,
        max_concurrent: int = 1,
        threads: int | None = None,
        heartbeat_s: float = 30.0,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        min_poll_s: float = 0.5,
        max_poll_s: float = 3600.0,
        poll_jitter: float = 0.1,
        download_attempts: int = 3,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        random_fn: Callable[[], float] = random.random,
        verifier: WorkVerifier | None = None,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        self.api = api
        self.state = state
        self.executor = executor
        self.runtimes: list[Runtime] = list(runtimes or [executor.runtime])
        self.max_concurrent = max_concurrent
        self.threads = threads
        self.heartbeat_s = heartbeat_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.min_poll_s = min_poll_s
        self.max_poll_s = max_poll_s
        self.poll_jitter = poll_jitter
        self.download_attempts = download_attempts
        self._clock = clock
        self._sleep = sleep
        self._random = random_fn
        self.backoff = self._new_backoff()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._records: dict[int, UnitRecord] = {}
        self._aborted: set[int] = set()
        self._handled = 0
        self._slots: asyncio.Semaphore | None = None
        self.verifier = verifier

    # ------------------------------------------------------------------ main loops

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; then cancel running units (they resume next start).

        Raises :class:`PermanentError` (401/403) when the server refuses this host.
        """
        self.state.ensure()
        async with self._heartbeats():
            try:
                self._resume_leftovers()
                while not stop.is_set():
                    free = self.max_concurrent - len(self._tasks)
                    if free <= 0:
                        await self._wait_for_slot(stop)
                        continue
                    delay = await self._ask_for_work(free)
                    if delay is not None:
                        await self._wait(delay, stop)
            finally:
                await self._cancel_all()
        log.info("stopped")

    async def run_once(self) -> int:
        """One pass: finish leftover units, ask once for work, run it all to completion.

        Returns how many units left the client (uploaded, reported or dropped). Errors of
        the work request propagate.
        """
        self.state.ensure()
        before = self._handled
        async with self._heartbeats():
            try:
                self._resume_leftovers()
                free = self.max_concurrent - len(self._tasks)
                if free > 0:
                    response = await self.api.request_work(free, self.runtimes)
                    await self._learn_keys(response.units)
                    for assignment in response.units:
                        self._start_unit(assignment)
                while self._tasks:
                    await asyncio.wait(list(self._tasks.values()))
            finally:
                await self._cancel_all()
        return self._handled - before

    async def _ask_for_work(self, free: int) -> float | None:
        """Request up to ``free`` units; how long to wait before asking again (None: now)."""
        try:
            response = await self.api.request_work(free, self.runtimes)
        except TransientError as exc:
            retry_after = exc.retry_after
            delay = retry_after if retry_after is not None else self.backoff.next_delay()
            log.warning("work request failed (%s); retrying in %.1f s", exc, delay)
            return delay
        self.backoff.reset()
        await self._learn_keys(response.units)
        for assignment in response.units:
            self._start_unit(assignment)
        if len(response.units) >= free:
            return None
        delay = self.poll_delay(response.retry_after_s)
        if not response.units:
            log.info("no work; asking again in %.1f s", delay)
        return delay

    def poll_delay(self, retry_after_s: float) -> float:
        """The server's hint clamped to the poll bounds, with +-``poll_jitter`` jitter."""
        base = min(self.max_poll_s, max(self.min_poll_s, retry_after_s))
        return base * (1.0 + self.poll_jitter * (2.0 * self._random() - 1.0))

    # ------------------------------------------------------------------ task bookkeeping

    def _new_backoff(self) -> Backoff:
        return Backoff(base_s=self.backoff_base_s, cap_s=self.backoff_max_s, random_fn=self._random)

    def _resume_leftovers(self) -> None:
        # The state lock is held and nothing downloads yet: partial files are leftovers.
        self.state.cache.remove_partials()
        for record in self.state.units.load_all():
            if record.result_id not in self._tasks:
                log.info("unit %d: found from a previous run (%s)", record.result_id, record.status)
                self._spawn(record, recovered=True)

    async def _learn_keys(self, units: Sequence[WorkUnitAssignment]) -> None:
        """Pin rotated project keys endorsed by a pinned key, if a unit needs one."""
        if self.verifier is None:
            return
        unknown = {
            u.signature.key_fingerprint
            for u in units
            if u.signature is not None and not self.verifier.knows(u.signature.key_fingerprint)
        }
        if not unknown:
            return
        try:
            info = await self.api.project()
        except (TransientError, PermanentError) as exc:
            log.warning("could not fetch the project keys: %s", exc)
            return
        learned: list[str] = []
        for _ in info.public_keys:  # endorsements may chain: repeat until nothing changes
            before = len(self.verifier.keys)
            for entry in info.public_keys:
                if not self.verifier.knows(entry.fingerprint) and self.verifier.learn(entry):
                    learned.append(entry.public_key)
                    log.warning("pinned the rotated project key %s", entry.fingerprint)
            if len(self.verifier.keys) == before:
                break
        attachment = self.state.load_attachment()
        if learned and attachment is not None:
            keys = list(dict.fromkeys([*attachment.project_keys, *learned]))
            self.state.save_attachment(attachment.model_copy(update={"project_keys": keys}))

    def _start_unit(self, assignment: WorkUnitAssignment) -> None:
        if assignment.result_id in self._tasks:
            log.warning("unit %d: assigned twice, ignoring", assignment.result_id)
            return
        if self.verifier is not None:
            try:
                self.verifier.verify(assignment)
            except SignatureError as exc:
                log.error("unit %d: refused, not run: %s", assignment.result_id, exc)
                failure = PendingFailure(reason="invalid_input", detail=f"refused: {exc}")
                record = UnitRecord(assignment=assignment, status="reporting", failure=failure)
                self.state.units.save(record)
                self._spawn(record, recovered=False)
                return
        log.info(
            "unit %d: received (job %d round %d wu %d, deadline %s)",
            assignment.result_id,
            assignment.job_id,
            assignment.round,
            assignment.workunit_id,
            assignment.deadline.isoformat(),
        )
        record = UnitRecord(assignment=assignment, status="downloading")
        self.state.units.save(record)  # persisted before any download
        self._spawn(record, recovered=False)

    def _spawn(self, record: UnitRecord, *, recovered: bool) -> None:
        rid = record.result_id
        self._records[rid] = record
        task = asyncio.create_task(self._drive(record, recovered=recovered), name=f"unit-{rid}")
        self._tasks[rid] = task

        def _forget(done: asyncio.Task[None]) -> None:
            if self._tasks.get(rid) is done:
                del self._tasks[rid]
                self._records.pop(rid, None)

        task.add_done_callback(_forget)

    async def _cancel_all(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _wait(self, delay: float, stop: asyncio.Event) -> None:
        """``sleep(delay)``, cut short by ``stop``."""
        if delay <= 0 or stop.is_set():
            return
        sleeper = asyncio.ensure_future(self._sleep(delay))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (sleeper, stopper):
                fut.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)

    async def _wait_for_slot(self, stop: asyncio.Event) -> None:
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                {stopper, *self._tasks.values()}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopper.cancel()
            await asyncio.gather(stopper, return_exceptions=True)

    # ------------------------------------------------------------------ heartbeat

    @contextlib.asynccontextmanager
    async def _heartbeats(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await self.heartbeat_once()

    def fraction_done(self, result_id: int) -> float:
        record = self._records.get(result_id)
        if record is None:
            return 0.0
        if record.status == "uploading":
            return 1.0
        if record.status == "running":
            return read_progress(self.state.units.unit_dir(result_id) / PROGRESS_NAME)
        return 0.0

    async def heartbeat_once(self) -> list[int]:
        """Send one heartbeat; abort what the server lists. Returns the aborted ids."""
        running = [
            RunningUnit(result_id=rid, fraction_done=self.fraction_done(rid))
            for rid in sorted(self._tasks)
        ]
        try:
            response = await self.api.heartbeat(running)
        except (TransientError, PermanentError) as exc:
            log.warning("heartbeat failed: %s", exc)
            return []
        for rid in response.abort:
            await self.abort_unit(rid)
        return list(response.abort)

    async def abort_unit(self, result_id: int) -> None:
        """Stop a unit the server no longer wants: cancel it and drop its files, no upload."""
        log.info("unit %d: aborted by the server", result_id)
        task = self._tasks.get(result_id)
        if task is None:
            if self.state.units.unit_dir(result_id).exists():
                self.state.units.remove(result_id)
                self._handled += 1
            return
        # The unit's task drops its files itself (see _drive), so that whoever waits for
        # the task sees it gone even if this coroutine is cancelled meanwhile.
        self._aborted.add(result_id)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self._aborted.discard(result_id)

    # ------------------------------------------------------------------ one unit

    def _set(
        self, record: UnitRecord, status: UnitStatus, failure: PendingFailure | None = None
    ) -> UnitRecord:
        record = record.model_copy(update={"status": status, "failure": failure})
        self.state.units.save(record)
        self._records[record.result_id] = record
        return record

    def _finish(self, record: UnitRecord) -> None:
        self._set(record, "done")
        self.state.units.remove(record.result_id)
        self._handled += 1

    def _output_path(self, result_id: int) -> Path:
        return self.state.units.unit_dir(result_id) / OUTPUT_NAME

    async def _drive(self, record: UnitRecord, *, recovered: bool) -> None:
        rid = record.result_id
        try:
            if record.status == "done":
                self._finish(record)
                return
            if record.status == "reporting" and record.failure is not None:
                await self._report(record)
                return
            if record.status == "uploading" and self._output_path(rid).is_file():
                await self._upload(record)
                return
            if recovered:
                if self._clock() >= _deadline(record.assignment):
                    await self._fail(record, "aborted", "client restarted after deadline")
                    return
                log.info("unit %d: resuming", rid)
            try:
                record, result = await self._execute(record)
            except ExecutionFailed as exc:
                log.warning("unit %d: failed: %s", rid, exc.reason)
                await self._fail(record, exc.reason, exc.detail)
                return
            log.info("unit %d: trained in %.1f s", rid, result.elapsed_s)
            record = self._set(record, "uploading")
            await self._upload(record)
        except asyncio.CancelledError:
            if rid in self._aborted:
                self._aborted.discard(rid)
                self.state.units.remove(rid)
                self._handled += 1
            else:
                log.info("unit %d: interrupted; it resumes on the next start", rid)
            raise
        except Unauthorized as exc:
            log.error("unit %d: %s; keeping it for later", rid, exc)
        except Exception as exc:  # a bug or a local problem (disk full...): report, move on
            log.exception("unit %d: unexpected error", rid)
            with contextlib.suppress(Exception):
                await self._fail(record, "other", f"{type(exc).__name__}: {exc}")

    async def _execute(self, record: UnitRecord) -> tuple[UnitRecord, ExecutionResult]:
        assignment = record.assignment
        rid = record.result_id
        record = self._set(record, "downloading")
        paths = await self._fetch_inputs(record)
        record = self._set(record, "running")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrent)
        async with self._slots:
            timeout = _deadline(assignment) - self._clock()
            if timeout <= 0:
                raise ExecutionFailed("timeout", "the deadline passed before the unit could run")
            work_dir = self.state.units.unit_dir(rid)
            progress = work_dir / PROGRESS_NAME
            progress.unlink(missing_ok=True)
            log.info("unit %d: running (time limit %.0f s)", rid, timeout)
            result = await self.executor.run(
                ExecutionRequest(
                    work_dir=work_dir,
                    shard_path=paths[INPUT_SHARD],
                    weights_path=paths[INPUT_WEIGHTS],
                    task=assignment.task,
                    output_path=self._output_path(rid),
                    timeout_s=timeout,
                    threads=self.threads,
                    progress_path=progress,
                    image=assignment.image,
                )
            )
        return record, result

    async def _fetch_inputs(self, record: UnitRecord) -> dict[str, Path]:
        inputs = {inp.name: inp for inp in record.assignment.inputs}
        missing = [name for name in (INPUT_SHARD, INPUT_WEIGHTS) if name not in inputs]
        if missing:
            raise ExecutionFailed("invalid_input", f"the unit has no input {missing}")
        inputs_dir = self.state.units.unit_dir(record.result_id) / "inputs"
        inputs_dir.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for name in (INPUT_SHARD, INPUT_WEIGHTS):
            inp = inputs[name]
            dest = inputs_dir / inp.sha256
            if not (dest.is_file() and sha256_file(dest) == inp.sha256):
                cached = self.state.cache.get(inp.sha256)
                if cached is None:
                    cached = await self._download(record, inp)
                _link_or_copy(cached, dest)
            paths[name] = dest
        self.state.cache.evict()  # units hold hard links, so nothing in use is lost
        return paths

    async def _download(self, record: UnitRecord, inp: WorkInput) -> Path:
        rid = record.result_id
        backoff = self._new_backoff()
        integrity_failures = 0
        while True:
            try:
                path = await self.api.download_blob(
                    inp.url,
                    self.state.cache.path_for(inp.sha256),
                    inp.sha256,
                    expected_size=inp.size,
                )
                log.info("unit %d: downloaded %s (%d bytes)", rid, inp.name, inp.size)
                return path
            except IntegrityError as exc:
                integrity_failures += 1
                if integrity_failures >= self.download_attempts:
                    raise ExecutionFailed("download_error", str(exc)) from exc
                delay = backoff.next_delay()
                log.warning("unit %d: %s; retrying in %.1f s", rid, exc, delay)
            except TransientError as exc:
                if self._clock() >= _deadline(record.assignment):
                    raise ExecutionFailed(
                        "download_error", f"still failing at the deadline: {exc}"
                    ) from exc
                delay = exc.retry_after if exc.retry_after is not None else backoff.next_delay()
                log.warning("unit %d: download failed (%s); retrying in %.1f s", rid, exc, delay)
            except Unauthorized:
                raise
            except Rejected as exc:
                raise ExecutionFailed("download_error", str(exc)) from exc
            await self._sleep(delay)

    async def _upload(self, record: UnitRecord) -> None:
        rid = record.result_id
        upload = record.assignment.upload
        output = self._output_path(rid)
        size = output.stat().st_size
        if size > upload.max_bytes:
            await self._fail(
                record, "other", f"output is {size} bytes, over the limit of {upload.max_bytes}"
            )
            return
        backoff = self._new_backoff()
        while True:
            try:
                accepted = await self.api.upload_result(rid, output, url=upload.url)
            except TransientError as exc:
                if self._clock() >= _deadline(record.assignment):
                    log.warning("unit %d: upload failing at the deadline (%s); dropped", rid, exc)
                    self._finish(record)
                    return
                delay = exc.retry_after if exc.retry_after is not None else backoff.next_delay()
                log.warning("unit %d: upload failed (%s); retrying in %.1f s", rid, exc, delay)
                await self._sleep(delay)
                continue
            except Unauthorized:
                raise
            except PayloadRejected as exc:
                log.warning("unit %d: the server rejected the output: %s", rid, exc)
                await self._fail(record, "other", f"upload rejected: {exc}")
                return
            except Rejected as exc:  # not ours, another upload exists, no longer wanted
                log.warning("unit %d: upload refused (%s); dropped", rid, exc)
                self._finish(record)
                return
            log.info(
                "unit %d: uploaded%s%s",
                rid,
                " (duplicate)" if accepted.duplicate else "",
                " (late)" if accepted.late else "",
            )
            self._finish(record)
            return

    async def _fail(self, record: UnitRecord, reason: FailureReason, detail: str) -> None:
        failure = PendingFailure(reason=reason, detail=detail[-16384:])
        record = self._set(record, "reporting", failure)
        await self._report(record)

    async def _report(self, record: UnitRecord) -> None:
        assert record.failure is not None
        rid = record.result_id
        backoff = self._new_backoff()
        while True:
            try:
                await self.api.report_failure(rid, record.failure.reason, record.failure.detail)
            except TransientError as exc:
                if self._clock() >= _deadline(record.assignment):
                    log.warning("unit %d: failure report failing at the deadline; dropped", rid)
                    self._finish(record)
                    return
                delay = exc.retry_after if exc.retry_after is not None else backoff.next_delay()
                await self._sleep(delay)
                continue
            except Unauthorized:
                raise
            except Rejected as exc:
                log.warning("unit %d: failure report refused (%s); dropped", rid, exc)
            else:
                log.info("unit %d: reported failure %s", rid, record.failure.reason)
            self._finish(record)
            return
