from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import col

from tests.work_server.daemons.conftest import T0, Sim, make_spec
from work_server import rounds as rounds_module
from work_server.db.models import (
    Blob,
    DaemonRun,
    Job,
    JobState,
    Outcome,
    Round,
    RoundState,
    ServerState,
    WorkUnitState,
)
from work_server.rounds import task_seed
from yadml_common.wire import TaskConfig

METRICS = {
    "accuracy",
    "loss",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "roc_auc_macro",
    "average_precision_macro",
}


async def test_job_runs_all_rounds_and_completes(sim: Sim) -> None:
    job_id = await sim.start(make_spec(rounds=2, merge={"method": "simple_average"}))
    job: Job = await sim.get(Job, job_id)
    initial = job.model_sha256
    host = await sim.add_host()

    await sim.complete_round(job_id, 1, host, T0 + 10)
    assert await sim.aggregate(T0 + 11) == 1
    r1, r2 = await sim.all(Round, col(Round.job_id) == job_id)
    assert r1.state == RoundState.done and r1.closed_at == T0 + 11
    assert set(r1.metrics) >= METRICS and 0.0 <= r1.metrics["accuracy"] <= 1.0
    assert (r1.results_success, r1.results_error, r1.results_no_reply) == (2, 0, 0)
    job = await sim.get(Job, job_id)
    assert job.state == JobState.running and job.current_round == 2
    assert job.model_sha256 not in (None, initial) and job.model_sha256 == r2.weights_sha256
    assert (await sim.get(Blob, job.model_sha256)).kind == "weights"
    wus2 = await sim.wus(job_id, 2)
    assert all(wu.weights_sha256 == r2.weights_sha256 for wu in wus2)
    assert [TaskConfig.model_validate(wu.task).seed for wu in wus2] == [
        task_seed(7, 2, 0),
        task_seed(7, 2, 1),
    ]
    # the report grows live
    run_dir = sim.runs_dir / str(job_id)
    report = json.loads((run_dir / "report.json").read_text())
    assert len(report["rounds"]) == 1 and report["state"] == "running"
    assert job.report_path == str(run_dir / "report.json")

    await sim.complete_round(job_id, 2, host, T0 + 20)
    assert await sim.aggregate(T0 + 25) == 1
    job = await sim.get(Job, job_id)
    assert job.state == JobState.completed and job.finished_at == T0 + 25
    assert job.current_round == 2
    assert (await sim.get(Blob, job.model_sha256)).kind == "model"
    assert len(await sim.all(Round, col(Round.job_id) == job_id)) == 2

    report = json.loads((run_dir / "report.json").read_text())
    assert report["job_id"] == job_id and report["dataset"] == "digits"
    assert report["model"] == "lenet" and report["config"]["rounds"] == 2
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    assert report["rounds"][1]["duration_s"] == pytest.approx(14.0)  # T0+11 -> T0+25
    assert report["wall_s"] == pytest.approx(25.0)
    assert set(report["final"]) >= METRICS
    assert len(report["confusion_matrix"]) == 10
    assert sum(map(sum, report["confusion_matrix"])) == 360
    assert (run_dir / "accuracy.png").stat().st_size > 0
    assert (run_dir / "confusion.png").stat().st_size > 0

    assert await sim.aggregate(T0 + 30) == 0  # nothing left
    assert (await sim.get(DaemonRun, "aggregator")).last_error is None


async def test_round_deadline_closes_at_min_fraction(sim: Sim) -> None:
    spec = make_spec(rounds=2, round_min_fraction=0.5, round_timeout_s=50.0)
    job_id = await sim.start(spec)
    h1, h2 = await sim.add_host("a"), await sim.add_host("b")
    await sim.transition(T0)
    wu0, wu1 = await sim.wus(job_id, 1)
    (done,) = await sim.claim_all(wu0.id, [h1], T0)
    await sim.claim_all(wu1.id, [h2], T0)
    await sim.upload(done.id, T0 + 5, noise=0.01)
    await sim.cycle(T0 + 5)

    assert await sim.aggregate(T0 + 10) == 0  # before the deadline: wait for everybody
    assert await sim.aggregate(T0 + 50) == 1
    r1 = (await sim.all(Round, col(Round.job_id) == job_id))[0]
    assert r1.state == RoundState.done and r1.results_success == 1
    wus = await sim.wus(job_id, 1)
    assert [wu.state for wu in wus] == [WorkUnitState.done, WorkUnitState.cancelled]
    (slow_after,) = await sim.results(wu1.id)
    assert (slow_after.server_state, slow_after.outcome) == (ServerState.over, Outcome.didnt_need)
    assert (await sim.get(Job, job_id)).current_round == 2


async def test_round_with_no_done_work_unit_fails_the_job(sim: Sim) -> None:
    spec = make_spec(rounds=2, shards=2, replication={"max_error_results": 0})
    job_id = await sim.start(spec)
    host = await sim.add_host()
    await sim.transition(T0)
    for wu in await sim.wus(job_id, 1):
        (r,) = await sim.claim_all(wu.id, [host], T0)
        await sim.fail(r.id, T0 + 1)
    await sim.transition(T0 + 1)
    assert await sim.aggregate(T0 + 2) == 1
    job = await sim.get(Job, job_id)
    assert job.state == JobState.failed and "no work unit completed" in job.error
    assert job.finished_at == T0 + 2
    (r1,) = await sim.all(Round, col(Round.job_id) == job_id)
    assert r1.state == RoundState.failed
    assert not (sim.runs_dir / str(job_id)).exists()  # no round to report


async def test_cancelled_job_retires_its_work(sim: Sim) -> None:
    job_id = await sim.start(make_spec(replication={"target_nresults": 2}))
    host = await sim.add_host()
    await sim.transition(T0)
    wu0, _ = await sim.wus(job_id, 1)
    await sim.claim_all(wu0.id, [host], T0)
    async with sim.sm() as s:  # what the API's cancel does
        job = await s.get(Job, job_id)
        assert job is not None
        job.state = JobState.cancelled
        s.add(job)
        await s.commit()

    assert await sim.aggregate(T0 + 1) == 1
    (rnd,) = await sim.all(Round, col(Round.job_id) == job_id)
    assert rnd.state == RoundState.cancelled and rnd.closed_at == T0 + 1
    for wu in await sim.wus(job_id):
        assert wu.state == WorkUnitState.cancelled
        for r in await sim.results(wu.id):
            assert (r.server_state, r.outcome) == (ServerState.over, Outcome.didnt_need)
    assert (await sim.get(Job, job_id)).finished_at == T0 + 1
    assert await sim.aggregate(T0 + 2) == 0


async def test_start_failure_fails_the_job(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str, **_: Path | None) -> None:
        raise FileNotFoundError(f"dataset {name} not found")

    monkeypatch.setattr(rounds_module, "load_dataset", missing)
    job_id = await sim.start(make_spec())
    job = await sim.get(Job, job_id)
    assert job.state == JobState.failed and "not found" in job.error
    assert await sim.all(Round) == []
