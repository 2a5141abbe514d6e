"""Validator: checks uploaded results and picks each work unit's canonical result
(BOINC ``sched/validator.cpp``).

For every work unit with ``need_validate``:

* every candidate success (``validate_state`` ``init``, or ``inconclusive`` for an active
  work unit) is loaded from its blob and checked: a safetensors file with exactly the input
  weights' tensor names, shapes and dtypes, all values finite. A bad one becomes
  ``outcome=validate_error, validate_state=invalid``.
* ``min_quorum == 1``: the first good result (lowest id) is canonical.
  ``min_quorum > 1``: for each good result in id order, the good results that agree with it
  are counted; the first one with at least ``min_quorum`` agreeing (itself included) is
  canonical. Without such a group the good results become ``inconclusive`` and
  ``target_nresults`` is raised (up to ``max_total_results``) so the transitioner sends more.
* once a canonical result exists, every other good result is compared with it: agreeing ->
  ``valid``, else ``invalid``. The work unit becomes ``done`` with ``canonical_result_id``.
* a finished work unit's new successes are compared with its canonical result the same way
  (for credit only; the round closer merges canonical results only). When the canonical blob
  is gone (the file deleter removed it) they become ``too_late``.

**Agreement**: results ``a`` and ``b`` agree when for every tensor
``max|a - b| <= tolerance * max(1, max|a|, max|b|)`` (the work unit's ``tolerance``; an
absolute tolerance for small tensors, relative for large ones, symmetric in ``a``/``b``).

**Credit**: a valid result earns ``num_samples * local_epochs / 1000`` (the work unit's own
numbers, not the volunteer's report): one credit per thousand trained sample-epochs.
Hosts get ``results_valid``/``results_invalid`` and ``consecutive_valid`` updated
(``work_server.services.credit``, which also takes them back when a valid result is later
screened out).

Every validated work unit gets ``need_validate = False`` and ``transition_time = now``, so the
transitioner (the only daemon that decides what a work unit needs next) looks at it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from safetensors.torch import load as load_safetensors
from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.blobs import BlobStore
from work_server.daemons import drain, fresh_workunit, record_run, release_connection
from work_server.db.models import (
    Outcome,
    Result,
    ValidateState,
    WorkUnit,
    WorkUnitState,
)
from work_server.ml.updates import decode_result, task_encoding
from work_server.services import credit
from yadml_common.wire import UpdateEncoding

NAME = "validator"
log = logging.getLogger(__name__)

Weights = dict[str, torch.Tensor]


def agree(a: Weights, b: Weights, tolerance: float) -> bool:
    """Whether two state dicts with the same names agree within ``tolerance`` (see module)."""
    if a.keys() != b.keys():
        return False
    for name, ta in a.items():
        tb = b[name]
        if ta.shape != tb.shape:
            return False
        if ta.numel() == 0:
            continue
        x = ta.detach().to(torch.float64)
        y = tb.detach().to(torch.float64)
        scale = max(1.0, float(x.abs().max()), float(y.abs().max()))
        if float((x - y).abs().max()) > tolerance * scale:
            return False
    return True


def check_weights(
    data: bytes, reference: Weights, encoding: UpdateEncoding = "fp32"
) -> tuple[Weights | None, str | None]:
    """Decode ``data`` (an update in ``encoding``, whose base is ``reference``: the work
    unit's input weights) and check it against the reference layout: (weights, None) or
    (None, reason)."""
    try:
        weights = decode_result(data, reference, encoding)
    except Exception as exc:  # malformed file: the volunteer's problem, never ours
        what = "safetensors file" if encoding == "fp32" else f"{encoding} update"
        return None, f"not a {what}: {exc}"[:500]
    if weights.keys() != reference.keys():
        missing = sorted(reference.keys() - weights.keys())
        extra = sorted(weights.keys() - reference.keys())
        return None, f"tensor names differ (missing {missing[:5]}, unexpected {extra[:5]})"
    for name, ref in reference.items():
        t = weights[name]
        if t.dtype != ref.dtype:
            return None, f"{name}: dtype {t.dtype}, expected {ref.dtype}"
        if t.shape != ref.shape:
            return None, f"{name}: shape {list(t.shape)}, expected {list(ref.shape)}"
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return None, f"{name}: non-finite values"
    return weights, None


@dataclass
class _Verdicts:
    """What the validator decided for one work unit (computed in a thread)."""

    bad: dict[int, str]  # result id -> reason
    valid: list[int]
    invalid: list[int]
    inconclusive: list[int]
    too_late: list[int]
    canonical: int | None = None
    wu_error: str | None = None  # permanent problem with the work unit itself


def _decide(
    wu: WorkUnit,
    candidates: Sequence[tuple[int, str | None]],
    canonical: tuple[int, str | None] | None,
    blobs: BlobStore,
) -> _Verdicts:
    """Blocking part: load blobs, check tensors, find a quorum."""
    v = _Verdicts(bad={}, valid=[], invalid=[], inconclusive=[], too_late=[])
    try:
        encoding = task_encoding(wu.task)
        reference = load_safetensors(blobs.get(wu.weights_sha256))
    except Exception as exc:  # missing file, or safetensors' own error type
        v.wu_error = f"input weights {wu.weights_sha256[:12]} unreadable: {exc}"[:500]
        return v

    good: list[tuple[int, Weights]] = []
    for result_id, sha in candidates:
        if sha is None:
            v.bad[result_id] = "no output recorded"
            continue
        try:
            data = blobs.get(sha)
        except OSError as exc:
            v.bad[result_id] = f"output blob unreadable: {exc}"[:500]
            continue
        weights, reason = check_weights(data, reference, encoding)
        if weights is None:
            v.bad[result_id] = reason or "invalid output"
        else:
            good.append((result_id, weights))

    canonical_weights: Weights | None = None
    if canonical is not None:
        cid, csha = canonical
        v.canonical = cid
        try:
            canonical_weights = (
                decode_result(blobs.get(csha), reference, encoding) if csha else None
            )
        except Exception:
            canonical_weights = None
        if canonical_weights is None:
            v.too_late = [rid for rid, _ in good]
            return v
    elif good:
        if wu.min_quorum <= 1:
            v.canonical, canonical_weights = good[0]
        else:
            for rid, w in good:
                group = [other for other, ow in good if other == rid or agree(w, ow, wu.tolerance)]
                if len(group) >= wu.min_quorum:
                    v.canonical, canonical_weights = rid, w
                    break
    if canonical_weights is None:
        v.inconclusive = [rid for rid, _ in good]
        return v
    for rid, w in good:
        if rid == v.canonical or agree(canonical_weights, w, wu.tolerance):
            v.valid.append(rid)
        else:
            v.invalid.append(rid)
    return v


async def run_once(
    session: AsyncSession, now: float, *, blobs: BlobStore, batch_size: int = 50
) -> int:
    """Validate every work unit flagged ``need_validate``; one transaction per work unit."""
    due = (
        select(WorkUnit.id)
        .where(col(WorkUnit.need_validate).is_(True))
        .order_by(col(WorkUnit.id))
        .limit(batch_size)
    )

    async def handle(wu_id: int) -> None:
        await validate(session, wu_id, now, blobs=blobs)

    handled = await drain(session, due, handle)
    await record_run(session, NAME, now)
    return handled


async def validate(session: AsyncSession, wu_id: int, now: float, *, blobs: BlobStore) -> None:
    """Validate one work unit (no commit)."""
    wu = await fresh_workunit(session, wu_id)
    if wu is None:
        return
    active = wu.state == WorkUnitState.active
    states = [ValidateState.init, ValidateState.inconclusive] if active else [ValidateState.init]
    rows = (
        await session.exec(
            select(Result.id, Result.output_sha256)
            .where(
                col(Result.workunit_id) == wu_id,
                col(Result.outcome) == Outcome.success,
                col(Result.validate_state).in_(states),
            )
            .order_by(col(Result.id))
        )
    ).all()
    candidates = [(rid, sha) for rid, sha in rows if rid is not None]
    canonical: tuple[int, str | None] | None = None
    if not active:
        if wu.canonical_result_id is not None:
            csha = (
                await session.exec(
                    select(Result.output_sha256).where(col(Result.id) == wu.canonical_result_id)
                )
            ).one_or_none()
            canonical = (wu.canonical_result_id, csha)
        else:
            canonical = (-1, None)  # failed/cancelled: nothing to compare with

    await release_connection(session)
    verdicts = (
        await asyncio.to_thread(_decide, wu, candidates, canonical, blobs)
        if candidates
        else _Verdicts(bad={}, valid=[], invalid=[], inconclusive=[], too_late=[])
    )
    owners = {
        rid: (host_id, runtime)
        for rid, host_id, runtime in (
            await session.exec(
                select(Result.id, Result.host_id, Result.runtime).where(
                    col(Result.workunit_id) == wu_id
                )
            )
        ).all()
    }
    earned = credit.result_credit(wu.num_samples, wu.task)

    for rid, reason in verdicts.bad.items():
        log.info("result %s of work unit %s invalid: %s", rid, wu_id, reason)
        changed = await _set_result(
            session,
            rid,
            states,
            validate_state=ValidateState.invalid,
            outcome=Outcome.validate_error,
            error_reason="validate_error",
            error_detail=reason,
        )
        if changed:
            await credit.count_invalid(session, *owners.get(rid, (None, None)))
    for rid in verdicts.invalid:
        if await _set_result(session, rid, states, validate_state=ValidateState.invalid):
            await credit.count_invalid(session, *owners.get(rid, (None, None)))
    for rid in verdicts.valid:
        if await _set_result(session, rid, states, validate_state=ValidateState.valid):
            await credit.count_valid(session, *owners.get(rid, (None, None)), earned)
    for rid in verdicts.inconclusive:
        await _set_result(session, rid, states, validate_state=ValidateState.inconclusive)
    for rid in verdicts.too_late:
        await _set_result(session, rid, states, validate_state=ValidateState.too_late)

    values: dict[str, object] = {"need_validate": False, "transition_time": now}
    conditions = [col(WorkUnit.id) == wu_id]
    if active and verdicts.wu_error is not None:
        values.update(state=WorkUnitState.failed, error=verdicts.wu_error)
        conditions.append(col(WorkUnit.state) == WorkUnitState.active)
    elif active and verdicts.canonical is not None:
        values.update(state=WorkUnitState.done, canonical_result_id=verdicts.canonical)
        conditions.append(col(WorkUnit.state) == WorkUnitState.active)
    elif active and verdicts.inconclusive and len(verdicts.inconclusive) >= wu.min_quorum:
        # replicas disagree: ask for one more than the good results we have
        values["target_nresults"] = min(
            wu.max_total_results, max(wu.target_nresults, len(verdicts.inconclusive) + 1)
        )
    wu_changed = await session.exec(
        update(WorkUnit)
        .where(*conditions)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if wu_changed.rowcount == 0 and len(conditions) > 1:
        # the work unit was finished meanwhile: just hand it back to the transitioner
        await session.exec(
            update(WorkUnit)
            .where(col(WorkUnit.id) == wu_id)
            .values(need_validate=False, transition_time=now)
            .execution_options(synchronize_session=False)
        )


async def _set_result(
    session: AsyncSession, result_id: int, from_states: list[ValidateState], **values: object
) -> bool:
    changed = await session.exec(
        update(Result)
        .where(
            col(Result.id) == result_id,
            col(Result.outcome) == Outcome.success,
            col(Result.validate_state).in_(from_states),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(changed.rowcount == 1)
