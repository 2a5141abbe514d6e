"""The storage contract, on SQLite and on PostgreSQL alike: the migrations make exactly the
models' schema; work is claimed once; an upload is accepted once; a round closes once; the
daemons drive a job to completion. The concurrent cases run several sessions at once (on
PostgreSQL they are separate connections, as separate server processes would be)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from tests.work_server.daemons.conftest import T0, Sim, make_spec
from work_server.blobs import BlobStorage, BlobStore
from work_server.db import migrate
from work_server.db.engine import make_engine
from work_server.db.models import (
    Blob,
    Host,
    Job,
    JobState,
    Outcome,
    Result,
    Round,
    RoundState,
    ServerState,
)
from work_server.db.upsert import insert_ignore
from work_server.errors import DomainError
from work_server.services import dispatch, uploads


async def test_migrations_make_exactly_the_models_schema(engine: AsyncEngine) -> None:
    assert await migrate.current_revision(engine) is None
    assert await migrate.upgrade(engine) == migrate.head_revision()
    assert await migrate.schema_diff(engine) == []
    assert await migrate.upgrade(engine) == migrate.head_revision()  # idempotent


#: cases only PostgreSQL has: several processes (one SQLite database has one server process)
POSTGRES_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


@POSTGRES_ONLY
async def test_concurrent_upgrades_migrate_once(db_url: str) -> None:
    engines = [make_engine(db_url) for _ in range(4)]
    try:
        revisions = await asyncio.gather(*(migrate.upgrade(e) for e in engines))
        assert revisions == [migrate.head_revision()] * 4
        assert await migrate.schema_diff(engines[0]) == []
    finally:
        for e in engines:
            await e.dispose()


async def test_insert_ignore_inserts_once(store: Sim) -> None:
    async with store.sm() as s:
        row = {"sha256": "a" * 64, "size": 1, "kind": "result", "created_at": T0}
        assert await insert_ignore(s, Blob, **row)
        assert not await insert_ignore(s, Blob, **{**row, "size": 2})
        await s.commit()
    assert (await store.get(Blob, "a" * 64)).size == 1


async def _hosts(store: Sim, n: int) -> list[Host]:
    ids = [await store.add_host(f"h{i}") for i in range(n)]
    return [await store.get(Host, i) for i in ids]


async def _claim(store: Sim, host: Host, now: float) -> list[int]:
    async with store.sm() as s:
        claimed = await dispatch.claim_work(
            s, host, max_units=3, runtimes=None, now=now, draw=lambda: 1.0
        )
    return [c.result_id for c in claimed]


async def test_concurrent_claims_issue_every_result_once(store: Sim) -> None:
    job_id = await store.start(make_spec(shards=24, rounds=1))
    await store.transition(T0 + 1)
    hosts = await _hosts(store, 8)
    issued: list[int] = []
    for _ in range(10):
        batches = await asyncio.gather(*(_claim(store, h, T0 + 2) for h in hosts))
        issued += [rid for batch in batches for rid in batch]
        if not any(batches):
            break
    results = await store.all(Result)
    assert len(results) == 24
    assert len(issued) == 24
    assert sorted(issued) == sorted(r.id for r in results)  # each once, none left
    assert all(r.server_state == ServerState.in_progress for r in results)
    owners: dict[int | None, int] = {}
    for r in results:
        owners[r.host_id] = owners.get(r.host_id, 0) + 1
    assert sum(owners.values()) == 24
    assert None not in owners
    assert (await store.get(Job, job_id)).state == JobState.running


async def _upload(store: Sim, host: Host, result_id: int, body: bytes) -> Any:
    async with store.sm() as s:
        try:
            target = await uploads.prepare_upload(s, host, result_id)
            s.expunge_all()  # as the handler does while the body arrives
            await s.rollback()
            return await uploads.accept_upload(
                s,
                target,
                body,
                blobs=store.blobs,
                specs=uploads.WeightsSpecCache(store.blobs),
                now=T0 + 3,
            )
        except DomainError as exc:
            return exc


async def test_concurrent_uploads_accept_a_result_once(store: Sim) -> None:
    await store.start(make_spec(shards=2, rounds=1))
    await store.transition(T0 + 1)
    (host,) = await _hosts(store, 1)
    first, second = await _claim(store, host, T0 + 2)
    wu = (await store.wus(1))[0]
    body = store.output(wu, noise=0.01)
    # the same result five times at once, and another result with identical bytes
    outcomes = await asyncio.gather(
        *(_upload(store, host, first, body) for _ in range(5)), _upload(store, host, second, body)
    )
    mine, other = outcomes[:5], outcomes[5]
    assert all(isinstance(o, tuple) for o in outcomes), outcomes
    assert sorted(dup for _, dup, _ in mine) == [False, True, True, True, True]
    assert other[1] is False  # a different result with the same bytes is its own acceptance
    results = {r.id: r for r in await store.all(Result)}
    assert results[first].outcome == results[second].outcome == Outcome.success
    assert results[first].output_sha256 == results[second].output_sha256 == mine[0][0]
    assert len(await store.all(Blob, col(Blob.sha256) == mine[0][0])) == 1


async def test_the_daemons_complete_a_job(store: Sim) -> None:
    job_id = await store.start(make_spec(shards=2, rounds=2))
    host = await store.add_host()
    for number in (1, 2):
        await store.complete_round(job_id, number, host, T0 + 10 * number)
        assert (await store.advance(T0 + 10 * number + 1))["round_closer"] == 1
    job = await store.get(Job, job_id)
    assert job.state == JobState.completed
    assert job.model_sha256
    rounds = await store.all(Round, col(Round.job_id) == job_id)
    assert [(r.number, r.state) for r in rounds] == [(1, RoundState.done), (2, RoundState.done)]
    assert all(r.results_success == 2 for r in rounds)


async def test_concurrent_round_closers_close_a_round_once(store: Sim) -> None:
    job_id = await store.start(make_spec(shards=2, rounds=3))
    host = await store.add_host()
    await store.complete_round(job_id, 1, host, T0 + 10)
    handled = await asyncio.gather(*(store.advance(T0 + 11) for _ in range(3)))
    assert sum(h["round_closer"] for h in handled) == 1
    assert sum(h["work_generator"] for h in handled) == 1  # round 2, made once
    async with store.sm() as s:
        numbers = (
            await s.exec(
                select(Round.number, func.count())
                .where(col(Round.job_id) == job_id)
                .group_by(col(Round.number))
            )
        ).all()
    assert sorted(numbers) == [(1, 1), (2, 1)]
    assert (await store.get(Job, job_id)).current_round == 2


def test_the_directory_store_is_a_blob_storage(tmp_path: Path) -> None:
    store: BlobStorage = BlobStore(tmp_path / "blobs")
    sha = store.put(b"x" * 10)
    assert store.put(b"x" * 10) == sha
    assert store.get(sha) == b"x" * 10
    assert store.list() == [sha]
    assert store.size(sha) == 10
    assert store.disk_usage() == 10
    assert store.delete(sha)
    assert not store.exists(sha)
    assert not store.delete(sha)


@POSTGRES_ONLY  # SQLite has one writer: a claim in progress holds the whole database
async def test_claims_skip_rows_another_claim_holds(store: Sim) -> None:
    await store.start(make_spec(shards=8, rounds=1))
    await store.transition(T0 + 1)
    first, second = await _hosts(store, 2)
    async with store.sm() as holder:
        # another process's claim, still in its transaction: the oldest results are locked
        locked = (
            await holder.exec(select(Result.id).order_by(col(Result.id)).limit(4).with_for_update())
        ).all()
        claimed = await asyncio.wait_for(_claim(store, second, T0 + 2), timeout=10)
        await holder.rollback()
    assert len(claimed) == 3
    assert not set(claimed) & set(locked)
    assert len(await _claim(store, first, T0 + 2)) == 3  # the released rows are there again
