from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import col

from tests.work_server.daemons.conftest import T0, Sim, make_spec
from work_server import job_info
from work_server.daemons import job_data
from work_server.daemons.work_generator import OUTPUT_SIZE_SLACK, task_seed
from work_server.db.models import Blob, Job, JobState, Round, WorkUnitState
from yadml_common.wire import TaskConfig


async def test_start_job_builds_shards_and_round_one(sim: Sim) -> None:
    spec = make_spec(shards=3, replication={"min_quorum": 2, "target_nresults": 2})
    job_id = await sim.start(spec)

    job: Job = await sim.get(Job, job_id)
    assert job.state == JobState.running
    assert job.started_at == T0
    assert job.current_round == 1
    info = job_info.load(job)
    shas = info.shard_sha256
    assert len(shas) == 3
    assert len(set(shas)) == 3
    assert sum(info.shard_sizes) == 1437  # digits train split
    assert info.num_test_samples == 360
    assert info.confusion_matrix is None
    assert "confusion_matrix" not in job.info
    assert job.model_sha256 is not None
    for sha in [*shas, job.model_sha256]:
        assert sim.blobs.exists(sha)
        assert (await sim.get(Blob, sha)) is not None
    assert (await sim.get(Blob, job.model_sha256)).kind == "weights"

    (rnd,) = await sim.all(Round, col(Round.job_id) == job_id)
    assert rnd.number == 1
    assert rnd.weights_sha256 == job.model_sha256
    assert rnd.deadline == T0 + 2 * 100.0  # 2 x delay_bound_s

    wus = await sim.wus(job_id, 1)
    assert [wu.shard_index for wu in wus] == [0, 1, 2]
    assert [wu.shard_sha256 for wu in wus] == shas
    assert job.model_sha256 is not None
    weights_size = sim.blobs.size(job.model_sha256)
    seeds = set()
    for wu in wus:
        assert wu.state == WorkUnitState.active
        assert wu.transition_time == T0
        assert (wu.min_quorum, wu.target_nresults) == (2, 2)
        assert wu.max_output_bytes == 2 * weights_size + OUTPUT_SIZE_SLACK
        task = TaskConfig.model_validate(wu.task)
        assert task.dataset == "digits"
        assert task.seed == task_seed(7, 1, wu.shard_index)
        seeds.add(task.seed)
    assert len(seeds) == 3


def test_task_seed_is_deterministic_and_distinct() -> None:
    assert task_seed(1, 2, 3) == task_seed(1, 2, 3)
    seeds = {task_seed(s, r, i) for s in range(3) for r in range(1, 4) for i in range(4)}
    assert len(seeds) == 36
    assert all(0 <= s < 2**31 for s in seeds)


async def test_round_timeout_overrides_default_deadline(sim: Sim) -> None:
    job_id = await sim.start(make_spec(round_timeout_s=30.0))
    (rnd,) = await sim.all(Round, col(Round.job_id) == job_id)
    assert rnd.deadline == T0 + 30.0


async def test_open_round_has_sql_null_metrics(sim: Sim) -> None:
    """``Round.metrics IS NULL`` finds the rounds not evaluated yet (JSON none_as_null)."""
    job_id = await sim.start(make_spec())
    assert len(await sim.all(Round, col(Round.metrics).is_(None))) == 1
    assert await sim.all(Round, col(Round.metrics).is_not(None)) == []
    assert job_id


async def test_start_failure_fails_the_job(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str, **_: Path | None) -> None:
        raise FileNotFoundError(f"dataset {name} not found")

    monkeypatch.setattr(job_data, "load_dataset", missing)
    job_id = await sim.start(make_spec())
    job = await sim.get(Job, job_id)
    assert job.state == JobState.failed
    assert "not found" in job.error
    assert job.finished_at == T0
    assert await sim.all(Round) == []


async def test_next_round_once_the_round_is_done(sim: Sim) -> None:
    job_id = await sim.start(make_spec(shards=2, rounds=2))
    host = await sim.add_host()
    assert await sim.generate_work(T0 + 1) == 0  # round 1 still running
    await sim.complete_round(job_id, 1, host, T0 + 10)
    assert await sim.close_rounds(T0 + 11) == 1
    merged = (await sim.get(Job, job_id)).model_sha256
    assert await sim.generate_work(T0 + 12) == 1
    assert await sim.generate_work(T0 + 13) == 0  # made once
    job: Job = await sim.get(Job, job_id)
    assert job.current_round == 2
    r2 = (await sim.all(Round, col(Round.number) == 2))[0]
    assert r2.weights_sha256 == merged
    assert r2.started_at == T0 + 12
    assert all(wu.transition_time == T0 + 12 for wu in await sim.wus(job_id, 2))
    # after the last round there is no next one: the job finisher ends the job
    await sim.complete_round(job_id, 2, host, T0 + 20)
    assert await sim.close_rounds(T0 + 21) == 1
    assert await sim.generate_work(T0 + 22) == 0
    assert len(await sim.all(Round)) == 2
