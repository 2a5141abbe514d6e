"""Several ``yadml-server serve`` processes on one real PostgreSQL database and one shared state
directory (signing key, upload-grant secret, blobs), serving the same simulated volunteers
round robin: every result is issued once and accepted once, the job completes, exactly one
process runs the daemons, and killing it (SIGKILL) moves the daemons to another process
within seconds while the job goes on.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import col, select

from tests.pg import fresh_database, require_postgres
from tests.system.harness import OPERATOR, ServerProcess, wait_until
from tests.system.simhosts import Tally, run_hosts
from work_server.db.engine import make_engine, make_sessionmaker
from work_server.db.models import Outcome, Result, ServerState

pytestmark = pytest.mark.slow

#: replicated (two results per work unit): identical uploads reach different processes
JOB: dict[str, Any] = {
    "dataset": "digits",
    "shards": 8,
    "rounds": 2,
    "seed": 3,
    "replication": {"min_quorum": 2, "target_nresults": 2},
}
HOSTS = 8


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database(require_postgres()) as url:
        yield url


@contextmanager
def servers(tmp_path: Path, n: int, url: str) -> Iterator[list[ServerProcess]]:
    """``n`` server processes started at once (they race to migrate and to create the keys)."""
    shared = tmp_path / "shared"
    procs = []
    for i in range(n):
        root = tmp_path / f"server{i}"
        root.mkdir(parents=True)
        procs.append(
            ServerProcess(
                root,
                start_timeout=180,
                extra_args=[
                    *("--state-dir", str(shared / "var"), "--runs-dir", str(shared / "runs")),
                    *("--database-url", url),
                ],
            )
        )
    try:
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(lambda p: p.start(), procs))
        yield procs
    finally:
        for p in procs:
            p.kill(signal.SIGTERM)


def alive(p: ServerProcess) -> bool:
    return p.proc is not None and p.proc.poll() is None


def roles(procs: list[ServerProcess]) -> dict[int, str]:
    """port -> "leader" / "standby" of every live process."""
    out = {}
    for p in procs:
        if alive(p):
            out[p.port] = httpx.get(f"{p.url}/healthz", timeout=5).json()["daemons"]
    return out


def the_leader(procs: list[ServerProcess], timeout: float = 15) -> ServerProcess:
    def one() -> ServerProcess | None:
        r = roles(procs)
        leaders = [p for p in procs if r.get(p.port) == "leader"]
        assert len(leaders) <= 1, f"two leaders at once: {r}"
        return leaders[0] if leaders else None

    leader: ServerProcess = wait_until(one, timeout, "a daemon leader", interval=0.2)
    return leader


def submit(server: ServerProcess, **overrides: Any) -> int:
    r = server.api("POST", "/api/v1/jobs", json={**JOB, **overrides})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def hosts(procs: list[ServerProcess], job_id: int, timeout: float) -> Tally:
    by_url = {p.url: p for p in procs}
    return asyncio.run(
        run_hosts(
            list(by_url),
            HOSTS,
            job_id=job_id,
            operator_token=OPERATOR,
            stop_after_s=timeout,
            alive=lambda url: alive(by_url[url]),
        )
    )


async def _db_counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as s:
            rows = (
                await s.exec(
                    select(Result.server_state, Result.outcome, func.count()).group_by(
                        col(Result.server_state), col(Result.outcome)
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    return {f"{state}/{outcome}": n for state, outcome, n in rows}


def check_once(tally: Tally, url: str) -> None:
    """Every result issued once and accepted once, and the database agrees."""
    assert tally.job_state == "completed", tally
    assert tally.errors == []
    assert len(tally.issued) == len(set(tally.issued)), "a result was issued twice"
    assert sorted(tally.accepted) == sorted(tally.issued), "issued != accepted once each"
    assert tally.duplicates == []
    counts = asyncio.run(_db_counts(url))
    assert counts == {f"{ServerState.over}/{Outcome.success}": len(tally.accepted)}, counts
    assert len(tally.accepted) == JOB["shards"] * JOB["rounds"] * 2


@pytest.mark.parametrize("n", [2, 4])
def test_servers_share_one_database(tmp_path: Path, pg_url: str, n: int) -> None:
    with servers(tmp_path, n, pg_url) as procs:
        the_leader(procs)
        job_id = submit(procs[-1])
        tally = hosts(procs, job_id, timeout=150)  # ~20 s on a quiet machine
        check_once(tally, pg_url)
        assert sorted(roles(procs).values()) == ["leader"] + ["standby"] * (n - 1)
        served = {p.port: p.log.read_text().count("is now the leader") for p in procs}
        assert sum(served.values()) == 1, served


def test_killing_the_leader_moves_the_daemons(tmp_path: Path, pg_url: str) -> None:
    with servers(tmp_path, 3, pg_url) as procs:
        leader = the_leader(procs)
        # a claim committed by the killed process whose reply never left it is lost to its
        # host; the result is reissued once its deadline passes, so keep deadlines short
        job_id = submit(procs[0], rounds=3, replication={**JOB["replication"], "delay_bound_s": 15})
        result: list[Tally] = []
        worker = threading.Thread(target=lambda: result.append(hosts(procs, job_id, 150)))
        worker.start()
        try:
            watcher = next(p for p in procs if p is not leader)
            wait_until(lambda: watcher.job(job_id)["current_round"] >= 2, 90, "round 2")
            leader.kill(signal.SIGKILL)
            killed_at = time.monotonic()
            rest = [p for p in procs if p is not leader]
            successor = the_leader(rest, timeout=15)
            takeover_s = time.monotonic() - killed_at
        finally:
            worker.join(timeout=180)
        assert successor is not leader
        # the followers try every second; 10 s leaves room for a machine under heavy load
        assert takeover_s < 10.0, f"takeover took {takeover_s:.1f} s"
        print(f"daemon takeover after SIGKILL: {takeover_s:.2f} s")
        assert "is now the leader" in successor.log.read_text()
        (tally,) = result
        check_once_with_rounds(tally, pg_url, rounds=3)


def check_once_with_rounds(tally: Tally, url: str, rounds: int) -> None:
    assert tally.job_state == "completed", tally
    assert len(tally.issued) == len(set(tally.issued)), "a result was issued twice"
    assert len(tally.accepted) == len(set(tally.accepted)), "a result was accepted twice"
    counts = asyncio.run(_db_counts(url))
    success = counts.get(f"{ServerState.over}/{Outcome.success}", 0)
    # a round may close at its deadline without a unit whose claim died with the leader
    assert success == len(tally.accepted) >= JOB["shards"] * rounds, counts
