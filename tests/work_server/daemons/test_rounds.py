from __future__ import annotations

from sqlmodel import col

from tests.work_server.daemons.conftest import T0, Sim, make_spec
from work_server.db.models import Blob, Job, JobState, Round, WorkUnitState
from work_server.rounds import (
    INFO_NUM_TEST,
    INFO_SHARD_SHA256,
    INFO_SHARD_SIZES,
    OUTPUT_SIZE_SLACK,
    task_seed,
)
from yadml_common.wire import TaskConfig


async def test_start_job_builds_shards_and_round_one(sim: Sim) -> None:
    spec = make_spec(shards=3, replication={"min_quorum": 2, "target_nresults": 2})
    job_id = await sim.start(spec)

    job: Job = await sim.get(Job, job_id)
    assert job.state == JobState.running
    assert job.started_at == T0
    assert job.current_round == 1
    shas = job.info[INFO_SHARD_SHA256]
    assert len(shas) == 3 and len(set(shas)) == 3
    assert sum(job.info[INFO_SHARD_SIZES]) == 1437  # digits train split
    assert job.info[INFO_NUM_TEST] == 360
    for sha in [*shas, job.model_sha256]:
        assert sim.blobs.exists(sha)
        assert (await sim.get(Blob, sha)) is not None
    assert (await sim.get(Blob, job.model_sha256)).kind == "weights"

    (rnd,) = await sim.all(Round, col(Round.job_id) == job_id)
    assert rnd.number == 1 and rnd.weights_sha256 == job.model_sha256
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
        assert task.dataset == "digits" and task.seed == task_seed(7, 1, wu.shard_index)
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
