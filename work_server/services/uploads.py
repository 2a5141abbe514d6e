"""Result uploads and failure reports from volunteers.

An upload is checked completely in memory (ownership, state, size, safetensors structure,
tensor names/shapes/dtypes against the work unit's input weights, finiteness, report)
before anything is written, so a rejected upload leaves the database and the blob store
exactly as they were. Acceptance is a conditional update, so concurrent or repeated
uploads of one result are counted once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.blobs import BlobStore
from work_server.db.models import (
    Blob,
    Host,
    Outcome,
    Result,
    ServerState,
    ValidateState,
    WorkUnit,
    WorkUnitState,
)
from work_server.db.upsert import insert_ignore
from work_server.errors import Conflict, Forbidden, Gone, InvalidResult, NotFound
from work_server.ml.updates import check_scales, expected_upload_layout
from work_server.services import safetensors_check as st
from work_server.services import trust
from work_server.services.hosts import BANNED
from yadml_common.wire import REPORT_METADATA_KEY, FailureReport, TrainReport

Spec = dict[str, tuple[str, tuple[int, ...]]]


class WeightsSpecCache:
    """Expected tensor layout per input-weights blob (a small LRU; the blobs are trusted)."""

    def __init__(self, blobs: BlobStore, size: int = 64) -> None:
        self._blobs = blobs
        self._size = size
        self._cache: OrderedDict[str, Spec] = OrderedDict()

    def get(self, sha256: str) -> Spec:
        spec = self._cache.get(sha256)
        if spec is None:
            with self._blobs.path(sha256).open("rb") as f:
                head = f.read(8)
                n = int.from_bytes(head, "little")
                raw = json.loads(f.read(n))
            raw.pop("__metadata__", None)
            spec = {k: (v["dtype"], tuple(v["shape"])) for k, v in raw.items()}
            self._cache[sha256] = spec
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(sha256)
        return spec


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class UploadTarget:
    result: Result
    workunit: WorkUnit


async def _owned_result(session: AsyncSession, host: Host, result_id: int) -> UploadTarget:
    row = (
        await session.exec(
            select(Result, WorkUnit)
            .join(WorkUnit, col(WorkUnit.id) == Result.workunit_id)
            .where(col(Result.id) == result_id)
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"no result {result_id}")
    result, wu = row
    if result.host_id != host.id:
        raise Forbidden(f"result {result_id} was not sent to this host", code="not_your_result")
    return UploadTarget(result, wu)


def _still_wanted(result: Result, wu: WorkUnit) -> bool:
    if result.server_state == ServerState.in_progress:
        return wu.state in (WorkUnitState.active, WorkUnitState.done)
    if result.outcome == Outcome.no_reply:
        return wu.state == WorkUnitState.active  # late, but the work unit still needs it
    return False


async def prepare_upload(session: AsyncSession, host: Host, result_id: int) -> UploadTarget:
    """Checks that need no body: ownership and whether the result is still wanted."""
    target = await _owned_result(session, host, result_id)
    result, wu = target.result, target.workunit
    if result.error_reason == BANNED:
        # revoked by a ban, and for good: unbanning the host does not bring it back
        raise Gone(
            f"result {result_id} was revoked when this host was banned; it is not accepted",
            code="result_revoked",
        )
    if result.outcome == Outcome.success:
        return target  # a re-upload: idempotent if the bytes are the same (checked later)
    if not _still_wanted(result, wu):
        if result.outcome == Outcome.no_reply:
            await _record_too_late(session, result)
        raise Gone(
            f"result {result_id} is no longer wanted (outcome {result.outcome}, "
            f"work unit {wu.state})",
            code="result_not_wanted",
        )
    return target


async def _record_too_late(session: AsyncSession, result: Result) -> None:
    """A result past its deadline (``no_reply``) whose work unit no longer needs it: note that
    it came (``validate_state = too_late``, ``late``) so it is counted, once, but store
    nothing; it is never merged. The outcome stays ``no_reply`` (one error for the host)."""
    await session.exec(
        update(Result)
        .where(
            col(Result.id) == result.id,
            col(Result.outcome) == Outcome.no_reply,
            col(Result.validate_state) == ValidateState.init,
        )
        .values(validate_state=ValidateState.too_late, late=True)
    )
    await session.commit()


def validate_result_bytes(body: bytes, expected: Spec) -> TrainReport:
    """Raise InvalidResult unless ``body`` is a safetensors file shaped like ``expected``."""
    try:
        header = st.parse_header(body)
        st.check_matches(header, expected)
        st.check_finite(body, header)
        check_scales(body, header)
    except st.SafetensorsError as exc:
        raise InvalidResult(str(exc)) from None
    raw = header.metadata.get(REPORT_METADATA_KEY)
    if raw is None:
        raise InvalidResult(f'missing __metadata__["{REPORT_METADATA_KEY}"] training report')
    try:
        return TrainReport.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidResult(f"bad training report: {exc.errors()[0]['msg']}") from None


#: bodies up to this size are validated on the event loop (well under a millisecond); larger
#: ones in a worker thread, so other requests keep being served meanwhile
INLINE_VALIDATION_BYTES = 1 << 20


async def _validate_and_store(
    body: bytes, expected: Spec, blobs: BlobStore
) -> tuple[TrainReport, str]:
    """Validate, then store (hash + atomic write + fsync); nothing is stored unless valid.

    Python work in a worker thread contends for the GIL with the event loop: measured on a
    small-result load, it tripled the time the loop's own statements waited. Small bodies are
    therefore validated inline; the store (hashing, write and fsync, which release the GIL)
    always runs in a thread."""
    if len(body) <= INLINE_VALIDATION_BYTES:
        report = validate_result_bytes(body, expected)
        return report, await asyncio.to_thread(blobs.put, body)

    def work() -> tuple[TrainReport, str]:
        return validate_result_bytes(body, expected), blobs.put(body)

    return await asyncio.to_thread(work)


async def accept_upload(
    session: AsyncSession,
    target: UploadTarget,
    body: bytes,
    *,
    blobs: BlobStore,
    specs: WeightsSpecCache,
    now: float,
) -> tuple[str, bool, bool]:
    """Store a validated upload. Returns (sha256, duplicate, late)."""
    result, wu = target.result, target.workunit
    if result.outcome == Outcome.success:
        sha = await asyncio.to_thread(_sha256, body)
        if result.output_sha256 == sha:
            return sha, True, result.late
        raise Conflict(
            f"result {result.id} was already uploaded with different content",
            code="different_reupload",
        )
    # megabytes of work (parse, finiteness, one sha256, write + fsync) off the event loop,
    # so other uploads keep arriving meanwhile; nothing is stored unless it validates
    try:  # the job's update encoding decides the exact layout (yadml_common.encoding)
        expected = expected_upload_layout(specs.get(wu.weights_sha256), wu.task)
    except ValueError as exc:
        raise InvalidResult(str(exc)) from None
    report, sha = await _validate_and_store(body, expected, blobs)
    late = result.server_state == ServerState.over  # it had been marked no_reply
    updated = await session.exec(
        update(Result)
        .where(
            col(Result.id) == result.id,
            col(Result.outcome).in_([Outcome.init, Outcome.no_reply]),
            col(Result.server_state) == result.server_state,
        )
        .values(
            server_state=ServerState.over,
            outcome=Outcome.success,
            received_at=now,
            output_sha256=sha,
            output_size=len(body),
            report=report.model_dump(),
            fraction_done=1.0,
            late=late,
        )
    )
    if updated.rowcount != 1:
        await session.rollback()
        # lost a race with another upload of the same result, or with the transitioner
        current = await session.get(Result, result.id, populate_existing=True)
        if current is not None and current.outcome == Outcome.success:
            if current.output_sha256 == sha:
                return sha, True, current.late
            raise Conflict(f"result {result.id} was already uploaded with different content")
        if current is not None and current.error_reason == BANNED:
            raise Gone(f"result {result.id} was revoked meanwhile", code="result_revoked")
        raise Gone(f"result {result.id} is no longer wanted", code="result_not_wanted")
    # two processes may store the same bytes at once (replicas train identically)
    await insert_ignore(session, Blob, sha256=sha, size=len(body), kind="result", created_at=now)
    await session.exec(
        update(WorkUnit).where(col(WorkUnit.id) == wu.id).values(transition_time=now)
    )
    if late:
        # a no_reply had counted as an error; it did arrive after all
        await session.exec(
            update(Host)
            .where(col(Host.id) == result.host_id, col(Host.results_error) > 0)
            .values(results_error=col(Host.results_error) - 1)
        )
        await trust.unrecord_error(session, result.host_id, result.runtime)
    await session.commit()
    return sha, False, late


async def report_failure(
    session: AsyncSession, host: Host, result_id: int, body: FailureReport, now: float
) -> bool:
    """Record a client error. Returns False if it was already recorded (idempotent)."""
    target = await _owned_result(session, host, result_id)
    result, wu = target.result, target.workunit
    if result.outcome == Outcome.client_error:
        return False
    if result.outcome == Outcome.success:
        raise Conflict(f"result {result_id} was already uploaded successfully")
    if result.server_state != ServerState.in_progress:
        raise Gone(f"result {result_id} is over ({result.outcome})", code="result_not_wanted")
    updated = await session.exec(
        update(Result)
        .where(col(Result.id) == result_id, col(Result.server_state) == ServerState.in_progress)
        .values(
            server_state=ServerState.over,
            outcome=Outcome.client_error,
            received_at=now,
            error_reason=body.reason,
            error_detail=body.detail[-16384:],
        )
    )
    if updated.rowcount != 1:
        await session.rollback()
        return False
    await session.exec(
        update(Host)
        .where(col(Host.id) == host.id)
        .values(results_error=col(Host.results_error) + 1, consecutive_valid=0)
    )
    await trust.record_error(session, host.id, result.runtime)
    await session.exec(
        update(WorkUnit).where(col(WorkUnit.id) == wu.id).values(transition_time=now)
    )
    await session.commit()
    return True
