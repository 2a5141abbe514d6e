"""Scheduler daemons, one small module per concern (BOINC ``sched/`` style).

Each daemon exposes ``async def run_once(session, now, *, <deps>) -> int`` that handles what
is due at ``now``, commits its own work in small transactions and returns the number of items
it handled. Daemons never call each other: they hand work on only through state columns.
``roster.py`` lists them (name, ``run_once``, interval, whom a busy run wakes);
``scheduler.py`` runs them.

=====================  =====================================================================
daemon                 what it does
=====================  =====================================================================
transitioner           work units due (``transition_time <= now``): timeouts, new results,
                       failure, ``need_validate``; retires results nobody needs
validator              work units with ``need_validate``: checks results, picks the canonical
round_closer           rounds due: merge, screen, evaluate; cancels the rest of the round
work_generator         pending jobs: data, initial weights, round 1; then each next round
job_finisher           jobs whose last round closed (or failed): final report, end state
file_deleter           blobs no row needs any more
=====================  =====================================================================

**State columns and their owners.** Each state change has exactly one writer; the others
only read the column (and the API, which acts for volunteers and operators, is named where it
writes).

=============================  ============================================================
state column                   owner (what it writes)
=============================  ============================================================
``Job.state``                  API: ``pending`` (new), ``cancelled``;
                               work generator: ``pending -> running | failed``;
                               job finisher: ``running -> completed | failed``
``Job.info``, ``current_round``  work generator (``Job.info.confusion_matrix``: round closer)
``Job.model_sha256``           work generator (initial weights), round closer (merged weights)
``Job.error``                  work generator (start failed), round closer (why its round failed)
``Job.finished_at``            API (cancel), job finisher
``Round`` rows, ``running``    work generator
``Round.state``                round closer: ``running -> done | failed | cancelled``
``WorkUnit`` rows, ``active``  work generator
``WorkUnit.state``             validator: ``active -> done`` (or ``failed``: unreadable input);
                               transitioner: ``active -> failed`` (too many errors/results);
                               round closer: ``active -> cancelled``
``WorkUnit.canonical_result``  validator
``WorkUnit.need_validate``     transitioner sets it, validator clears it (round closer too,
                               when it cancels the work unit)
``WorkUnit.transition_time``   anyone may set it to ``now`` (asks the transitioner to look);
                               only the transitioner sets it later
``Result`` rows, ``unsent``    transitioner
``Result.server_state``        API: ``unsent -> in_progress -> over`` (claim, upload, failure;
                               a ban: ``client_error`` with ``error_reason='host_banned'``);
                               transitioner: ``-> over`` as ``no_reply`` (deadline) and
                               ``didnt_need`` (retired: the only one who retires results)
``Result.validate_state``      validator; round closer's screening (``-> invalid``); API
                               (``too_late`` for a refused late upload; a ban: unjudged
                               successes ``-> invalid``)
``Blob`` rows                  whoever stores a blob adds its row; file deleter removes rows
=============================  ============================================================

So ending work is a hand-over too: the round closer only marks a round's leftover work units
``cancelled`` and sets their ``transition_time = now``; the transitioner retires their
results on its next pass (which the round closer's wake-up makes immediate).

Errors: a permanent problem with one item (a job, a work unit, a result) marks that item
failed/invalid with a reason and the run goes on; a transient one (the database is busy, a
lost connection) is raised, the scheduler logs and records it, and the next run retries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from work_server.db.models import DaemonRun, WorkUnit
from work_server.db.upsert import insert_ignore

#: Exceptions that mean "try again later" rather than "this item is broken".
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, DBAPIError)

__all__ = ["TRANSIENT_ERRORS", "drain", "fresh_workunit", "record_run", "release_connection"]


async def release_connection(session: AsyncSession) -> None:
    """End the current (read-only) transaction before slow work in a thread, so the database
    connection goes back to the pool meanwhile: SQLite runs on a single connection (see
    ``db/engine.py``) and the API must not wait for a merge or a plot. Callers re-read what
    they write with conditional updates, so nothing relies on the earlier snapshot."""
    await session.commit()


async def record_run(
    session: AsyncSession, name: str, now: float, error: str | None = None
) -> None:
    """Upsert the daemon's ``DaemonRun`` row (last run time and error) and commit.

    Two processes may record the same daemon's first run at once (a leader hand-over, or
    tests running daemons side by side): the insert ignores the conflict, then the update
    sets the values either way."""
    inserted = await insert_ignore(session, DaemonRun, name=name, last_run=now, last_error=error)
    if not inserted:
        await session.exec(
            update(DaemonRun)
            .where(col(DaemonRun.name) == name)
            .values(last_run=now, last_error=error)
        )
    await session.commit()


async def fresh_workunit(session: AsyncSession, wu_id: int) -> WorkUnit | None:
    """The work unit as the database has it now (not a stale copy from the session)."""
    return (
        await session.exec(
            select(WorkUnit)
            .where(col(WorkUnit.id) == wu_id)
            .execution_options(populate_existing=True)
        )
    ).one_or_none()


async def drain(
    session: AsyncSession,
    due: SelectOfScalar[Any],  # selects ids (``int | None`` as the ORM types them)
    handle: Callable[[int], Awaitable[None]],
) -> int:
    """Handle every id that ``due`` selects, one transaction each (``handle``, then commit),
    batch after batch until it selects nothing new; returns how many were handled.

    ``due`` should be limited to a batch (the whole backlog is never loaded at once). An id
    that is still due after its handling (say, a work unit whose next look is already due)
    is handled once per run, so a run always ends."""
    handled = 0
    seen: set[int] = set()
    while True:
        ids = [i for i in (await session.exec(due)).all() if i is not None and i not in seen]
        if not ids:
            return handled
        for item_id in ids:
            seen.add(item_id)
            await handle(item_id)
            await session.commit()
            handled += 1
