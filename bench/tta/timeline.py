"""Where the system's wall time went, from the timestamps it already records.

Sources: the server database (``Round.closed_at`` = when the round closer's run that closed the
round began; ``Result.sent_at``/``received_at``; the trainer's ``TrainReport.elapsed_s``), the
server log (``job J started``, ``job J round N closed`` = merged, evaluated and about to
commit) and the clients' logs (``unit R: running`` = inputs on disk, executor starts;
``trained in`` = executor returned).

Each round is split along its critical path (the unit that arrived last):

* ``dispatch``: round open (previous round committed) -> the last unit handed out: the
  transitioner creating results, the volunteers' polling;
* ``fetch``: handed out -> inputs on disk (download or cache hit, state files);
* ``process``: executor time minus the trainer's own time: process start and teardown (or
  the warm process' hand-off);
* ``trainer``: the trainer's own time (reading inputs, training, writing the output);
* ``upload``: executor returned -> the server has the result;
* ``validate_wait``: last result in -> the round closer's run that closes the round begins
  (transitioner, validator, round-closer intervals or wakes);
* ``aggregate``: merge + evaluate on the test set + report.

They add up to the round's wall time exactly (one clock; log times have 1 ms resolution).
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

PARTS = ("dispatch", "fetch", "process", "trainer", "upload", "validate_wait", "aggregate")
_STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "
_UNIT = re.compile(_STAMP + r".*unit (\d+): (running|trained in|uploaded)")


def _time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time, as logged


def server_events(log: Path, job_id: int) -> dict[str, float]:
    """``started`` and ``closed:<n>`` times of one job from the server log."""
    started = re.compile(_STAMP + rf".*job {job_id} started")
    closed = re.compile(_STAMP + rf".*job {job_id} round (\d+) closed")
    events: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        if m := started.match(line):
            events.setdefault("started", _time(m.group(1)))
        elif m := closed.match(line):
            events[f"closed:{m.group(2)}"] = _time(m.group(1))
    return events


def client_events(logs: list[Path]) -> dict[int, dict[str, float]]:
    """Per result id: ``running``, ``trained`` (and ``uploaded``) times from client logs."""
    units: dict[int, dict[str, float]] = {}
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if m := _UNIT.match(line):
                key = {"running": "running", "trained in": "trained"}.get(m.group(3), "uploaded")
                units.setdefault(int(m.group(2)), {})[key] = _time(m.group(1))
    return units


def _rows(db: Path, sql: str, args: tuple[Any, ...]) -> list[sqlite3.Row]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def breakdown(state_dir: Path, job_id: int, last_round: int) -> dict[str, Any]:
    """Per-round parts (see the module docstring) for rounds ``1..last_round``, and totals."""
    db = state_dir / "yadml.db"
    server = server_events(state_dir / "server.log", job_id)
    units = client_events(sorted((state_dir / "clients").glob("*/client.log")))
    rounds = {
        r["number"]: r
        for r in _rows(db, "SELECT number, closed_at FROM round WHERE job_id = ?", (job_id,))
    }
    results = _rows(
        db,
        "SELECT r.id, rd.number, r.sent_at, r.received_at, r.report FROM result r "
        "JOIN workunit w ON w.id = r.workunit_id JOIN round rd ON rd.id = w.round_id "
        "WHERE w.job_id = ? AND r.outcome = 'success'",
        (job_id,),
    )
    out: list[dict[str, Any]] = []
    opened = server["started"]
    for number in range(1, last_round + 1):
        closed_log = server[f"closed:{number}"]
        mine = [r for r in results if r["number"] == number and r["received_at"] is not None]
        crit = max(mine, key=lambda r: r["received_at"])
        ev = units[crit["id"]]
        trainer = float(json.loads(crit["report"])["elapsed_s"])
        closed_at = float(rounds[number]["closed_at"])
        parts = {
            "dispatch": crit["sent_at"] - opened,
            "fetch": ev["running"] - crit["sent_at"],
            "process": (ev["trained"] - ev["running"]) - trainer,
            "trainer": trainer,
            "upload": crit["received_at"] - ev["trained"],
            "validate_wait": closed_at - crit["received_at"],
            "aggregate": closed_log - closed_at,
        }
        trainers = [float(json.loads(r["report"])["elapsed_s"]) for r in mine]
        out.append(
            {
                "round": number,
                "wall_s": closed_log - opened,
                **{f"{k}_s": v for k, v in parts.items()},
                "units": len(mine),
                "trainer_min_s": min(trainers),
                "trainer_max_s": max(trainers),
                "first_sent_after_open_s": min(r["sent_at"] for r in mine) - opened,
            }
        )
        opened = closed_log
    totals = {f"{k}_s": sum(r[f"{k}_s"] for r in out) for k in PARTS}
    return {"job_started": server["started"], "rounds": out, "totals": totals}
