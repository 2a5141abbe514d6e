"""The time-to-accuracy breakdown (``bench.tta.timeline``) over a real run's own output.

The benchmark's system runner (``bench.tta.runs.system``: a real work server and real
volunteer client processes, started as ``work_server.demo`` starts them) trains a small
``digits`` job for two rounds. The timeline parsed from the server's and the clients' logs must
agree with the server's database, so a change in the log lines or the schema the breakdown
reads fails here rather than in a benchmark run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from bench.tta.runs import system
from bench.tta.timeline import PARTS, breakdown, client_events, server_events
from work_server.demo.options import DemoOptions

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROUNDS = 2
#: log lines carry milliseconds, truncated: a logged event may read up to 1 ms early
SLACK = 0.002


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """(state dir, job id) of a finished two-round digits job with two volunteers."""
    root = tmp_path_factory.mktemp("tta")
    opts = DemoOptions(
        dataset="digits",
        volunteers=2,
        rounds=ROUNDS,
        state_dir=root / "state",
        runs_dir=root / "runs",
        seed=3,
    )
    run = system(
        opts,
        target=1.01,  # never reached: the job runs all its rounds
        max_wall_s=150,
        console=Console(quiet=True),
        on_round=lambda row: None,
    )
    assert [r["round"] for r in run["rounds"]] == list(range(1, ROUNDS + 1)), run
    return opts.state_dir, int(run["job_id"])


def _query(db: Path, sql: str, *args: Any) -> list[sqlite3.Row]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def test_the_timeline_of_a_real_run_matches_its_database(real_run: tuple[Path, int]) -> None:
    state_dir, job_id = real_run
    db = state_dir / "yadml.db"
    parts = breakdown(state_dir, job_id, ROUNDS)

    [job] = _query(db, "SELECT started_at FROM job WHERE id = ?", job_id)
    rounds = {
        r["number"]: r
        for r in _query(
            db, "SELECT number, state, started_at, closed_at FROM round WHERE job_id = ?", job_id
        )
    }
    results = _query(
        db,
        "SELECT x.id, rd.number, x.sent_at, x.received_at, x.report FROM result x "
        "JOIN workunit w ON w.id = x.workunit_id JOIN round rd ON rd.id = w.round_id "
        "WHERE w.job_id = ? AND x.outcome = 'success'",
        job_id,
    )
    assert [rounds[n]["state"] for n in range(1, ROUNDS + 1)] == ["done"] * ROUNDS

    # the server log's events, against the rows they accompany
    server = server_events(state_dir / "server.log", job_id)
    assert parts["job_started"] == server["started"]
    assert server["started"] >= job["started_at"] - SLACK
    for n in range(1, ROUNDS + 1):
        assert server[f"closed:{n}"] >= rounds[n]["closed_at"] - SLACK
        if n < ROUNDS:  # round n's commit opens round n + 1
            assert server[f"closed:{n}"] <= rounds[n + 1]["started_at"] + SLACK

    # every accepted result is in a client log, between its dispatch and its arrival
    units = client_events(sorted((state_dir / "clients").glob("*/client.log")))
    assert {r["id"] for r in results} <= set(units)
    for r in results:
        ev = units[r["id"]]
        assert r["sent_at"] - SLACK <= ev["running"] <= ev["trained"] <= r["received_at"] + SLACK
        assert ev["trained"] <= ev["uploaded"]

    # each round split along its last result, adding up to the round's wall time
    assert [row["round"] for row in parts["rounds"]] == list(range(1, ROUNDS + 1))
    opened = server["started"]
    for row in parts["rounds"]:
        n = row["round"]
        mine = [r for r in results if r["number"] == n]
        last = max(mine, key=lambda r: r["received_at"])
        trainers = [float(json.loads(r["report"])["elapsed_s"]) for r in mine]
        assert row["units"] == len(mine) == 2
        assert row["wall_s"] == pytest.approx(server[f"closed:{n}"] - opened)
        assert sum(row[f"{p}_s"] for p in PARTS) == pytest.approx(row["wall_s"])
        assert all(row[f"{p}_s"] >= -SLACK for p in PARTS), row
        assert row["trainer_s"] == pytest.approx(float(json.loads(last["report"])["elapsed_s"]))
        assert (row["trainer_min_s"], row["trainer_max_s"]) == (min(trainers), max(trainers))
        assert row["dispatch_s"] == pytest.approx(last["sent_at"] - opened)
        assert row["upload_s"] == pytest.approx(last["received_at"] - units[last["id"]]["trained"])
        assert row["validate_wait_s"] == pytest.approx(rounds[n]["closed_at"] - last["received_at"])
        assert row["aggregate_s"] == pytest.approx(server[f"closed:{n}"] - rounds[n]["closed_at"])
        opened = server[f"closed:{n}"]
    for p in PARTS:
        assert parts["totals"][f"{p}_s"] == pytest.approx(sum(r[f"{p}_s"] for r in parts["rounds"]))
