"""The time-to-accuracy breakdown reads the log lines and rows the system really writes."""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from tta.timeline import PARTS, breakdown, client_events, server_events

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # both CLIs' logging format


def _log(path: Path, name: str, lines: list[tuple[float, str]]) -> None:
    """Write ``lines`` as the server/client CLIs' logging would, at the given UNIX times."""
    formatter = logging.Formatter(FORMAT)
    out = []
    for t, message in lines:
        record = logging.LogRecord(name, logging.INFO, __file__, 0, message, None, None)
        record.created, record.msecs = t, (t - int(t)) * 1000
        out.append(formatter.format(record))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")


def _db(path: Path, t0: float) -> None:
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE round (id INTEGER, job_id INTEGER, number INTEGER, closed_at REAL);"
        "CREATE TABLE workunit (id INTEGER, job_id INTEGER, round_id INTEGER);"
        "CREATE TABLE result (id INTEGER, workunit_id INTEGER, outcome TEXT, sent_at REAL,"
        " received_at REAL, report TEXT);"
    )
    con.execute("INSERT INTO round VALUES (1, 7, 1, ?)", (t0 + 13.0,))
    con.executemany("INSERT INTO workunit VALUES (?, 7, 1)", [(1,), (2,)])
    report = json.dumps({"elapsed_s": 8.0})
    con.executemany(
        "INSERT INTO result VALUES (?, ?, ?, ?, ?, ?)",
        [
            (10, 1, "success", t0 + 1.0, t0 + 11.0, report),
            (11, 2, "success", t0 + 1.5, t0 + 12.0, report),
            (12, 2, "client_error", t0 + 1.0, t0 + 2.0, None),
        ],
    )
    con.commit()
    con.close()


def test_breakdown_adds_up_to_the_round(tmp_path: Path) -> None:
    t0 = time.time()
    _log(
        tmp_path / "server.log",
        "work_server.daemons.aggregator",
        [
            (t0, "job 7 started"),
            (t0 + 14.0, "job 7 round 1 closed: 2/2 work units done, accuracy 0.9100"),
        ],
    )
    _log(
        tmp_path / "clients" / "1" / "client.log",
        "volunteer_client.daemon",
        [
            (t0 + 2.0, "unit 11: running (time limit 600 s)"),
            (t0 + 11.5, "unit 11: trained in 9.5 s"),
            (t0 + 12.0, "unit 11: uploaded"),
        ],
    )
    _db(tmp_path / "yadml.db", t0)
    assert server_events(tmp_path / "server.log", 7) == pytest.approx(
        {"started": t0, "closed:1": t0 + 14.0}, abs=2e-3
    )
    assert set(client_events([tmp_path / "clients" / "1" / "client.log"])[11]) == {
        "running",
        "trained",
        "uploaded",
    }
    [r] = breakdown(tmp_path, 7, 1)["rounds"]
    expected = {
        "dispatch": 1.5,  # the last unit was handed out 1.5 s after the round opened
        "fetch": 0.5,
        "process": 1.5,  # executor 9.5 s - trainer 8 s
        "trainer": 8.0,
        "upload": 0.5,
        "validate_wait": 1.0,
        "aggregate": 1.0,
    }
    assert {p: r[f"{p}_s"] for p in PARTS} == pytest.approx(expected, abs=5e-3)
    assert sum(r[f"{p}_s"] for p in PARTS) == pytest.approx(r["wall_s"], abs=1e-6)
    assert r["units"] == 2
