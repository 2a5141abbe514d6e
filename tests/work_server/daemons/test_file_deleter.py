from __future__ import annotations

import time

from tests.work_server.daemons.conftest import T0, Sim, make_spec
from work_server import job_info
from work_server.db.models import Blob, DaemonRun, Job, JobState, Result


async def test_deletes_only_unreferenced_blobs(sim: Sim) -> None:
    finished = await sim.start(make_spec(rounds=1, seed=1))
    host = await sim.add_host()
    await sim.complete_round(finished, 1, host, T0 + 1)
    await sim.advance(T0 + 2)
    done: Job = await sim.get(Job, finished)
    assert done.state == JobState.completed
    running = await sim.start(make_spec(rounds=2, seed=2), now=T0 + 3)
    live: Job = await sim.get(Job, running)
    done_info, live_info = job_info.load(done), job_info.load(live)
    await sim.transition(T0 + 3)
    orphan = sim.blobs.put(b"no row mentions me")
    async with sim.sm() as s:
        s.add(Blob(sha256=orphan, size=18, kind="result", created_at=T0))
        await s.commit()

    outputs = {r.output_sha256 for r in await sim.all(Result) if r.output_sha256}
    garbage = {
        *done_info.shard_sha256,
        *outputs,
        orphan,
        done_info.initial_weights_sha256,
    }
    keep = {
        done.model_sha256,
        live.model_sha256,
        *live_info.shard_sha256,
        live_info.test_sha256,  # shared by both jobs (same test split)
    }
    assert done_info.test_sha256 == live_info.test_sha256
    assert not garbage & keep
    before = {b.sha256 for b in await sim.all(Blob)}
    assert garbage | keep <= before

    assert await sim.delete_files(T0 + 100, grace_s=3600) == 0  # all within the grace period
    deleted = await sim.delete_files(T0 + 10_000, grace_s=3600)
    after = {b.sha256 for b in await sim.all(Blob)}
    assert deleted == len(before - after)
    assert garbage.isdisjoint(after)
    assert keep <= after
    assert before - after == garbage
    for sha in garbage:
        assert not sim.blobs.exists(sha)
    for sha in keep:
        assert sha is not None
        assert sim.blobs.exists(sha)
    assert (await sim.get(DaemonRun, "file_deleter")).last_run == T0 + 10_000


async def test_deletes_old_files_without_a_row(sim: Sim) -> None:
    stray = sim.blobs.put(b"written, but the row never committed")
    assert await sim.delete_files(time.time(), grace_s=3600) == 0  # too fresh
    assert sim.blobs.exists(stray)
    assert await sim.delete_files(time.time() + 7200, grace_s=3600) == 1
    assert not sim.blobs.exists(stray)
