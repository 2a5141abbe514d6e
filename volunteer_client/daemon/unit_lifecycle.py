"""The state machine of one unit: fetch its inputs, run the executor, upload the output,
or report why there is none.

Each step is persisted in ``units/<id>/unit.json`` before it starts (``downloading`` ->
``running`` -> ``uploading``, or ``reporting`` with the pending failure), so a restarted
client resumes where it stopped: a finished output is uploaded, a pending failure is
reported, an unfinished unit whose deadline has not passed runs again, an expired one is
reported ``aborted``.

Every transfer goes through the one :class:`RetryPolicy`; what it lets out decides the
unit's end: a download that cannot succeed is a ``download_error`` failure; an output the
server calls bad (:class:`PayloadRejected`) is an ``other`` failure; an upload or report
the server refuses otherwise, or that still fails at the deadline, is dropped (the server
has moved on). :class:`Unauthorized` keeps the unit for later: the host must attach again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from yadml_common.wire import INPUT_SHARD, INPUT_WEIGHTS, WorkInput, WorkUnitAssignment

from ..api import ServerAPI
from ..errors import (
    ExecutionFailed,
    FailureReason,
    IntegrityError,
    PayloadRejected,
    Rejected,
    TransientError,
    Unauthorized,
)
from ..executors.base import ExecutionRequest, ExecutionResult, Executor
from ..state import PendingFailure, StateDir, UnitRecord, UnitStatus, sha256_file
from .retry import RetryPolicy
from .unit_files import OUTPUT_NAME, PROGRESS_NAME, link_or_copy, read_progress

__all__ = ["Unit", "UnitLifecycle"]

log = logging.getLogger(__name__)


def _deadline(assignment: WorkUnitAssignment) -> float:
    deadline: datetime = assignment.deadline
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=UTC)
    return deadline.timestamp()


@dataclass(eq=False)
class Unit:
    """One unit in flight: its latest persisted record, and how its task ended."""

    record: UnitRecord
    #: the server wants it stopped: when its task is cancelled, the task drops its files
    aborted: bool = False
    #: it left the client (uploaded, reported, dropped or aborted), not merely interrupted
    left: bool = False

    @property
    def result_id(self) -> int:
        return self.record.result_id


class UnitLifecycle:
    """Drives units through their states; one per daemon, shared by all its units.

    At most ``max_concurrent`` units run their executor at once; ``clock`` (UNIX seconds)
    decides what is past its deadline.
    """

    def __init__(
        self,
        *,
        api: ServerAPI,
        state: StateDir,
        executor: Executor,
        retry: RetryPolicy,
        max_concurrent: int = 1,
        threads: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._api = api
        self._state = state
        self._executor = executor
        self._retry = retry
        self._max_concurrent = max_concurrent
        self._threads = threads
        self._clock = clock
        # Made on first use: a semaphore belongs to the event loop that first waits on it.
        self._slots: asyncio.Semaphore | None = None

    def fraction_done(self, unit: Unit) -> float:
        """How far the unit is, for heartbeats: the trainer's progress while it runs."""
        if unit.record.status == "uploading":
            return 1.0
        if unit.record.status == "running":
            return read_progress(self._state.units.unit_dir(unit.result_id) / PROGRESS_NAME)
        return 0.0

    async def drive(self, unit: Unit, *, recovered: bool) -> None:
        """Take ``unit`` from its persisted state to its end (see the module docstring).

        ``recovered``: the unit comes from a previous run of the client.
        """
        rid = unit.result_id
        try:
            record = unit.record
            if record.status == "done":
                self._finish(unit)
                return
            if record.status == "reporting" and record.failure is not None:
                await self._report(unit)
                return
            if record.status == "uploading" and self._output_path(rid).is_file():
                await self._upload(unit)
                return
            if recovered:
                if self._clock() >= _deadline(record.assignment):
                    await self._fail(unit, "aborted", "client restarted after deadline")
                    return
                log.info("unit %d: resuming", rid)
            try:
                result = await self._execute(unit)
            except ExecutionFailed as exc:
                log.warning("unit %d: failed: %s", rid, exc.reason)
                await self._fail(unit, exc.reason, exc.detail)
                return
            log.info("unit %d: trained in %.1f s", rid, result.elapsed_s)
            self._set(unit, "uploading")
            await self._upload(unit)
        except asyncio.CancelledError:
            if unit.aborted:
                self._state.units.remove(rid)
                unit.left = True
            else:
                log.info("unit %d: interrupted; it resumes on the next start", rid)
            raise
        except Unauthorized as exc:
            log.error("unit %d: %s; keeping it for later", rid, exc)
        except Exception as exc:  # a bug or a local problem (disk full...): report, move on
            log.exception("unit %d: unexpected error", rid)
            with contextlib.suppress(Exception):
                await self._fail(unit, "other", f"{type(exc).__name__}: {exc}")

    async def _fail(self, unit: Unit, reason: FailureReason, detail: str) -> None:
        """Persist the failure (so a restart still reports it), then report it."""
        self._set(unit, "reporting", PendingFailure(reason=reason, detail=detail[-16384:]))
        await self._report(unit)

    # ------------------------------------------------------------------ steps

    def _set(self, unit: Unit, status: UnitStatus, failure: PendingFailure | None = None) -> None:
        unit.record = unit.record.model_copy(update={"status": status, "failure": failure})
        self._state.units.save(unit.record)

    def _finish(self, unit: Unit) -> None:
        self._set(unit, "done")
        self._state.units.remove(unit.result_id)
        unit.left = True

    def _output_path(self, result_id: int) -> Path:
        return self._state.units.unit_dir(result_id) / OUTPUT_NAME

    async def _execute(self, unit: Unit) -> ExecutionResult:
        assignment = unit.record.assignment
        rid = unit.result_id
        self._set(unit, "downloading")
        paths = await self._fetch_inputs(unit)
        self._set(unit, "running")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_concurrent)
        async with self._slots:
            timeout = _deadline(assignment) - self._clock()
            if timeout <= 0:
                raise ExecutionFailed("timeout", "the deadline passed before the unit could run")
            work_dir = self._state.units.unit_dir(rid)
            progress = work_dir / PROGRESS_NAME
            progress.unlink(missing_ok=True)
            log.info("unit %d: running (time limit %.0f s)", rid, timeout)
            return await self._executor.run(
                ExecutionRequest(
                    work_dir=work_dir,
                    shard_path=paths[INPUT_SHARD],
                    weights_path=paths[INPUT_WEIGHTS],
                    task=assignment.task,
                    output_path=self._output_path(rid),
                    timeout_s=timeout,
                    threads=self._threads,
                    progress_path=progress,
                    image=assignment.image,
                )
            )

    async def _fetch_inputs(self, unit: Unit) -> dict[str, Path]:
        inputs = {inp.name: inp for inp in unit.record.assignment.inputs}
        missing = [name for name in (INPUT_SHARD, INPUT_WEIGHTS) if name not in inputs]
        if missing:
            raise ExecutionFailed("invalid_input", f"the unit has no input {missing}")
        inputs_dir = self._state.units.unit_dir(unit.result_id) / "inputs"
        inputs_dir.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for name in (INPUT_SHARD, INPUT_WEIGHTS):
            inp = inputs[name]
            dest = inputs_dir / inp.sha256
            if not (dest.is_file() and sha256_file(dest) == inp.sha256):
                cached = self._state.cache.get(inp.sha256)
                if cached is None:
                    cached = await self._download(unit, inp)
                link_or_copy(cached, dest)
            paths[name] = dest
        self._state.cache.evict()  # units hold hard links, so nothing in use is lost
        return paths

    async def _download(self, unit: Unit, inp: WorkInput) -> Path:
        rid = unit.result_id
        download = functools.partial(
            self._api.download_blob,
            inp.url,
            self._state.cache.path_for(inp.sha256),
            inp.sha256,
            expected_size=inp.size,
        )
        deadline = _deadline(unit.record.assignment)
        try:
            path = await self._retry.run(download, deadline=deadline, what=f"unit {rid}: download")
        except IntegrityError as exc:
            raise ExecutionFailed("download_error", str(exc)) from exc
        except TransientError as exc:
            raise ExecutionFailed(
                "download_error", f"still failing at the deadline: {exc}"
            ) from exc
        except Unauthorized:
            raise
        except Rejected as exc:
            raise ExecutionFailed("download_error", str(exc)) from exc
        log.info("unit %d: downloaded %s (%d bytes)", rid, inp.name, inp.size)
        return path

    async def _upload(self, unit: Unit) -> None:
        rid = unit.result_id
        spec = unit.record.assignment.upload
        output = self._output_path(rid)
        size = output.stat().st_size
        if size > spec.max_bytes:
            detail = f"output is {size} bytes, over the limit of {spec.max_bytes}"
            await self._fail(unit, "other", detail)
            return
        upload = functools.partial(
            self._api.upload_result, rid, output, grant=spec.grant, url=spec.url
        )
        deadline = _deadline(unit.record.assignment)
        try:
            accepted = await self._retry.run(upload, deadline=deadline, what=f"unit {rid}: upload")
        except TransientError as exc:
            log.warning("unit %d: upload failing at the deadline (%s); dropped", rid, exc)
        except Unauthorized:
            raise
        except PayloadRejected as exc:
            log.warning("unit %d: the server rejected the output: %s", rid, exc)
            await self._fail(unit, "other", f"upload rejected: {exc}")
            return
        except Rejected as exc:  # not ours, another upload exists, or no longer wanted
            log.warning("unit %d: upload refused (%s); dropped", rid, exc)
        else:
            log.info(
                "unit %d: uploaded%s%s",
                rid,
                " (duplicate)" if accepted.duplicate else "",
                " (late)" if accepted.late else "",
            )
        self._finish(unit)

    async def _report(self, unit: Unit) -> None:
        rid = unit.result_id
        failure = unit.record.failure
        assert failure is not None
        report = functools.partial(self._api.report_failure, rid, failure.reason, failure.detail)
        deadline = _deadline(unit.record.assignment)
        try:
            await self._retry.run(report, deadline=deadline, what=f"unit {rid}: failure report")
        except TransientError:
            log.warning("unit %d: failure report failing at the deadline; dropped", rid)
        except Unauthorized:
            raise
        except Rejected as exc:
            log.warning("unit %d: failure report refused (%s); dropped", rid, exc)
        else:
            log.info("unit %d: reported failure %s", rid, failure.reason)
        self._finish(unit)
