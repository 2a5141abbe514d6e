"""The daemon lock: one holder at a time, released when its holder dies, taken over by the
next process that tries; only the holder's scheduler runs the daemons."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.pg import fresh_database, require_postgres
from work_server.blobs import BlobStore
from work_server.config import DaemonIntervals
from work_server.daemons.leader import FileLeadership, PostgresLeadership, make_leadership
from work_server.daemons.roster import DaemonDeps
from work_server.daemons.scheduler import DaemonScheduler
from work_server.db.engine import create_schema, make_engine, make_sessionmaker
from work_server.db.models import DaemonRun


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database(require_postgres()) as url:
        yield url


async def test_postgres_lock_has_one_holder_and_moves_when_it_dies(pg_url: str) -> None:
    engines = [make_engine(pg_url) for _ in range(3)]
    try:
        a, b = PostgresLeadership(engines[0]), PostgresLeadership(engines[1])
        assert await a.try_acquire()
        assert a.held
        assert not await b.try_acquire()
        assert not b.held
        assert await a.try_acquire()  # still ours: the check passes
        # the holder "dies": its session is terminated from outside, as when its process
        # is killed and the server closes the connection
        async with engines[2].connect() as admin:
            ended = await admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND granted AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            )
            assert ended.scalars().all() == [True]
        assert await b.try_acquire()
        assert b.held
        assert not await a.try_acquire()
        assert not a.held
        await b.release()
        assert await a.try_acquire()  # released explicitly: free again at once
        await a.release()
    finally:
        for e in engines:
            await e.dispose()


async def test_file_lock_has_one_holder(tmp_path: Path) -> None:
    a, b = FileLeadership(tmp_path / "daemons.lock"), FileLeadership(tmp_path / "daemons.lock")
    assert await a.try_acquire()
    assert await a.try_acquire()
    assert not await b.try_acquire()
    await a.release()
    assert await b.try_acquire()
    assert b.held
    assert not a.held
    await b.release()


async def test_only_the_leaders_scheduler_runs_daemons(pg_url: str, tmp_path: Path) -> None:
    engine = make_engine(pg_url)
    other = make_engine(pg_url)
    try:
        await create_schema(engine)
        sm = make_sessionmaker(engine)
        schedulers = [
            DaemonScheduler(
                sessionmaker=sm,
                intervals=DaemonIntervals(),
                deps=DaemonDeps(blobs=BlobStore(tmp_path / "blobs"), runs_dir=tmp_path / "runs"),
                leadership=make_leadership(e, lock_file=tmp_path / "unused.lock"),
            )
            for e in (engine, other)
        ]
        leader, standby = schedulers
        assert [s.role for s in schedulers] == ["standby", "standby"]
        assert await leader.check_leadership()
        assert not await standby.check_leadership()
        assert [s.role for s in schedulers] == ["leader", "standby"]
        assert await standby.run_now("transitioner") == 0
        async with sm() as s:
            assert await s.get(DaemonRun, "transitioner") is None  # the standby did nothing
        await leader.run_now("transitioner")
        async with sm() as s:
            assert await s.get(DaemonRun, "transitioner") is not None
        assert leader.leadership is not None
        await leader.leadership.release()
        assert await standby.check_leadership()
        assert standby.role == "leader"
        assert standby.leadership is not None
        await standby.leadership.release()
    finally:
        await engine.dispose()
        await other.dispose()
