"""End to end: a real server process, real volunteer client processes, real SQLite.

These are the slowest tests (tens of seconds each): every unit starts a trainer process.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load

from tests.system.harness import ClientProcess, ServerProcess, cluster, wait_until

pytestmark = pytest.mark.slow

DIGITS_JOB: dict[str, Any] = {
    "dataset": "digits",
    "shards": 2,
    "rounds": 3,
    "local_epochs": 2,
    "lr": 0.003,
    "batch_size": 32,
    "seed": 1,
}


def _submit(server: ServerProcess, **overrides: Any) -> int:
    r = server.api("POST", "/api/v1/jobs", json={**DIGITS_JOB, **overrides})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _wait_done(server: ServerProcess, job_id: int, timeout: float) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        try:
            job = server.job(job_id)
        except Exception:  # server restarting
            return None
        return job if job["state"] in ("completed", "failed", "cancelled") else None

    job: dict[str, Any] = wait_until(done, timeout, f"job {job_id} to finish", interval=0.5)
    return job


def _db(server: ServerProcess) -> sqlite3.Connection:
    con = sqlite3.connect(server.root / "var" / "yadml.db")
    con.row_factory = sqlite3.Row
    return con


def _check_accounting(server: ServerProcess, job_id: int) -> None:
    """No accepted result lost (its blob is there and it is counted) or counted twice."""
    con = _db(server)
    try:
        rounds = con.execute(
            "SELECT * FROM round WHERE job_id=? ORDER BY number", (job_id,)
        ).fetchall()
        for rnd in rounds:
            rows = con.execute(
                "SELECT r.* FROM result r JOIN workunit w ON w.id = r.workunit_id "
                "WHERE w.round_id=?",
                (rnd["id"],),
            ).fetchall()
            successes = [r for r in rows if r["outcome"] == "success"]
            assert rnd["results_success"] == len(successes), dict(rnd)
            pairs = [(r["workunit_id"], r["host_id"]) for r in rows if r["host_id"] is not None]
            assert len(pairs) == len(set(pairs)), "a host got two results of one work unit"
            for r in successes:
                blob = server.root / "var" / "blobs" / r["output_sha256"][:2] / r["output_sha256"]
                assert blob.is_file(), f"accepted result {r['id']} lost its upload"
            wus = con.execute("SELECT * FROM workunit WHERE round_id=?", (rnd["id"],)).fetchall()
            for wu in wus:
                if wu["state"] == "done":
                    canon = [r for r in successes if r["id"] == wu["canonical_result_id"]]
                    assert len(canon) == 1, dict(wu)
    finally:
        con.close()


def test_full_job_on_digits(tmp_path: Path) -> None:
    with cluster(tmp_path, 2) as (server, clients):
        for c in clients:
            c.start()
        job_id = _submit(server)
        job = _wait_done(server, job_id, 300)
        assert job["state"] == "completed", job
        assert [r["round"] for r in job["rounds"]] == [1, 2, 3]
        final = job["rounds"][-1]
        assert final["accuracy"] > 0.75, job["rounds"]
        assert final["results_success"] == 2
        for key in (
            "precision_macro",
            "recall_macro",
            "f1_macro",
            "roc_auc_macro",
            "average_precision_macro",
        ):
            assert 0.0 <= final[key] <= 1.0
        report_dir = tmp_path / "runs" / str(job_id)
        report = json.loads((report_dir / "report.json").read_text())
        assert len(report["rounds"]) == 3
        assert len(report["confusion_matrix"]) == 10
        assert (report_dir / "accuracy.png").stat().st_size > 1000
        assert (report_dir / "confusion.png").stat().st_size > 1000
        model = server.api("GET", f"/api/v1/jobs/{job_id}/model")
        assert model.status_code == 200
        assert "conv1.weight" in load(model.content)
        # a second job while one runs is refused; after it finished it is accepted
        assert _submit(server, rounds=1) > job_id
        assert server.api("POST", "/api/v1/jobs", json=DIGITS_JOB).status_code == 409
        _check_accounting(server, job_id)
        status = server.api("GET", "/api/v1/status").json()
        assert status["hosts_total"] == 2
        pipeline = ("transitioner", "validator", "round_closer", "work_generator", "job_finisher")
        assert all(status["daemons"][d] for d in pipeline)
    # A normal run leaves nothing an operator or a volunteer would read as trouble.
    for log in (server.log, *(c.log for c in clients)):
        trouble = [
            line for line in log.read_text().splitlines() if re.search(r" (WARNING|ERROR) ", line)
        ]
        assert trouble == [], f"{log}:\n" + "\n".join(trouble)


def test_client_killed_mid_unit_is_reissued(tmp_path: Path) -> None:
    with cluster(tmp_path, 2) as (server, clients):
        victim, rescuer = clients
        victim.start()
        job_id = _submit(
            server,
            rounds=1,
            local_epochs=30,
            replication={"delay_bound_s": 60, "max_total_results": 4},
        )
        wait_until(victim.units_in_flight, 60, "the victim to take a unit")
        wait_until(
            lambda: server.api("GET", "/api/v1/status").json()["results_in_progress"],
            30,
            "the unit to be in progress",
        )
        time.sleep(2)  # mid-training
        victim.stop(signal.SIGKILL)
        rescuer.start()
        job = _wait_done(server, job_id, 240)
        assert job["state"] == "completed", job
        assert job["rounds"][0]["results_no_reply"] >= 1
        con = _db(server)
        try:
            victim_id = con.execute("SELECT id FROM host WHERE name='volunteer-0'").fetchone()["id"]
            lost = con.execute(
                "SELECT workunit_id FROM result WHERE host_id=? AND outcome='no_reply'",
                (victim_id,),
            ).fetchall()
            assert lost, "the victim's unit should have passed its deadline"
            for row in lost:
                redo = con.execute(
                    "SELECT * FROM result WHERE workunit_id=? AND outcome='success'",
                    (row["workunit_id"],),
                ).fetchall()
                assert redo
                assert all(r["host_id"] != victim_id for r in redo)
        finally:
            con.close()
        _check_accounting(server, job_id)


def test_server_killed_and_restarted_mid_round(tmp_path: Path) -> None:
    with cluster(tmp_path, 2) as (server, clients):
        for c in clients:
            c.start()
        job_id = _submit(server, rounds=4)

        def in_round_two() -> bool:
            job = server.job(job_id)
            return bool(job["current_round"] >= 2 and job["state"] == "running")

        wait_until(in_round_two, 180, "round 2")
        wait_until(
            lambda: server.api("GET", "/api/v1/status").json()["results_in_progress"],
            60,
            "work in progress",
        )
        server.kill(signal.SIGKILL)
        time.sleep(1.5)
        server.start()
        job = _wait_done(server, job_id, 300)
        assert job["state"] == "completed", job
        assert [r["round"] for r in job["rounds"]] == [1, 2, 3, 4]
        _check_accounting(server, job_id)
        assert server.starts == 2
        assert all(
            isinstance(c, ClientProcess) and c.proc and c.proc.poll() is None for c in clients
        ), "clients survive a server outage"
