"""A job from start to completion through the work generator, the round closer and the job
finisher: rounds, merged weights, the live report and the final one."""

from __future__ import annotations

import json

import pytest
from sqlmodel import col

from tests.work_server.daemons.conftest import T0, Sim, make_spec
from work_server.daemons.work_generator import task_seed
from work_server.db.models import Blob, DaemonRun, Job, JobState, Round, RoundState
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
    assert await sim.advance(T0 + 11) == {"round_closer": 1, "work_generator": 1, "job_finisher": 0}
    r1, r2 = await sim.all(Round, col(Round.job_id) == job_id)
    assert r1.state == RoundState.done
    assert r1.closed_at == T0 + 11
    assert set(r1.metrics) >= METRICS
    assert 0.0 <= r1.metrics["accuracy"] <= 1.0
    assert (r1.results_success, r1.results_error, r1.results_no_reply) == (2, 0, 0)
    job = await sim.get(Job, job_id)
    assert job.state == JobState.running
    assert job.current_round == 2
    assert job.model_sha256 not in (None, initial)
    assert job.model_sha256 == r2.weights_sha256
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
    assert len(report["rounds"]) == 1
    assert report["state"] == "running"
    assert job.report_path == str(run_dir / "report.json")

    await sim.complete_round(job_id, 2, host, T0 + 20)
    assert await sim.advance(T0 + 25) == {"round_closer": 1, "work_generator": 0, "job_finisher": 1}
    job = await sim.get(Job, job_id)
    assert job.state == JobState.completed
    assert job.finished_at == T0 + 25
    assert job.current_round == 2
    assert (await sim.get(Blob, job.model_sha256)).kind == "model"
    assert len(await sim.all(Round, col(Round.job_id) == job_id)) == 2

    report = json.loads((run_dir / "report.json").read_text())
    assert report["job_id"] == job_id
    assert report["dataset"] == "digits"
    assert report["model"] == "lenet"
    assert report["config"]["rounds"] == 2
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    assert report["rounds"][1]["duration_s"] == pytest.approx(14.0)  # T0+11 -> T0+25
    assert report["wall_s"] == pytest.approx(25.0)
    assert set(report["final"]) >= METRICS
    assert len(report["confusion_matrix"]) == 10
    assert sum(map(sum, report["confusion_matrix"])) == 360
    assert (run_dir / "accuracy.png").stat().st_size > 0
    assert (run_dir / "confusion.png").stat().st_size > 0

    assert sum((await sim.advance(T0 + 30)).values()) == 0  # nothing left
    for name in ("round_closer", "work_generator", "job_finisher"):
        assert (await sim.get(DaemonRun, name)).last_error is None


async def test_a_completed_job_stays_running_until_its_report_is_written(sim: Sim) -> None:
    """The last round's close leaves the job running; only the job finisher completes it,
    after writing the final report (so "completed" always comes with the whole report)."""
    job_id = await sim.start(make_spec(rounds=1, shards=1))
    host = await sim.add_host()
    await sim.complete_round(job_id, 1, host, T0 + 10)
    assert await sim.close_rounds(T0 + 11) == 1
    assert (await sim.get(Job, job_id)).state == JobState.running
    assert not (sim.runs_dir / str(job_id)).exists()  # the last report is the finisher's
    assert await sim.finish_jobs(T0 + 12) == 1
    job = await sim.get(Job, job_id)
    assert job.state == JobState.completed
    assert job.finished_at == T0 + 12
    report = json.loads((sim.runs_dir / str(job_id) / "report.json").read_text())
    assert report["state"] == "completed"
    assert [r["round"] for r in report["rounds"]] == [1]
    assert await sim.finish_jobs(T0 + 13) == 0
