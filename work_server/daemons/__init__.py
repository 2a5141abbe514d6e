"""Scheduler daemons, one small module per concern (BOINC ``sched/`` style).

Each daemon exposes ``async def run_once(session, now, *, <deps>) -> int`` that handles what
is due at ``now``, commits its own work in small transactions and returns the number of items
it handled. Daemons never call each other: they hand work on only through state columns
(``WorkUnit.transition_time``, ``need_validate``, ``state``, ``canonical_result_id``).

Errors: a permanent problem with one item (a job, a work unit, a result) marks that item
failed/invalid with a reason and the run goes on; a transient one (the database is busy, a
lost connection) is raised, the scheduler logs and records it, and the next run retries.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.db.models import DaemonRun, WorkUnit

#: Exceptions that mean "try again later" rather than "this item is broken".
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, DBAPIError)

__all__ = ["TRANSIENT_ERRORS", "fresh_workunit", "record_run", "release_connection"]


async def release_connection(session: AsyncSession) -> None:
    """End the current (read-only) transaction before slow work in a thread, so the database
    connection goes back to the pool meanwhile: SQLite runs on a single connection (see
    ``db/engine.py``) and the API must not wait for a merge or a plot. Callers re-read what
    they write with conditional updates, so nothing relies on the earlier snapshot."""
    await session.commit()


async def record_run(
    session: AsyncSession, name: str, now: float, error: str | None = None
) -> None:
    """Upsert the daemon's ``DaemonRun`` row (last run time and error) and commit."""
    row = await session.get(DaemonRun, name, populate_existing=True)
    if row is None:
        session.add(DaemonRun(name=name, last_run=now, last_error=error))
    else:
        row.last_run = now
        row.last_error = error
        session.add(row)
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
