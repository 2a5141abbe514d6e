"""One scenario: a fresh database with ``hosts`` host rows, one job, run to completion."""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from bench.scalesim.engine import Engine, SimConfig
from bench.scalesim.hosts import HostModel
from bench.scalesim.report import analyse
from bench.scalesim.server import SimServer
from work_server.config import ServerConfig
from work_server.job_spec import JobSpec, ReplicationPolicy

#: the simulation starts here (a fixed UNIX time: runs are reproducible)
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
#: idle polling may take at most this share of the server when the poll interval is picked
TARGET_POLL_LOAD = 0.5
#: the server's own default wait for a host told "no work" (one source: ``ServerConfig``)
DEFAULT_RETRY_AFTER_S: float = next(
    f.default for f in fields(ServerConfig) if f.name == "retry_after_s"
)  # type: ignore[assignment]


def job_spec(*, shards: int, rounds: int, delay_bound_s: float) -> JobSpec:
    """The job every scenario runs: sklearn digits, LeNet, BOINC-style quorum of 2."""
    return JobSpec(
        dataset="digits",
        shards=shards,
        rounds=rounds,
        replication=ReplicationPolicy(
            min_quorum=2,
            target_nresults=2,
            max_error_results=3,
            max_total_results=6,
            delay_bound_s=delay_bound_s,
        ),
    )


async def run_scenario(
    hosts: int,
    spec: JobSpec,
    root: Path,
    *,
    daemon_interval_s: float,
    seed: int = 0,
    model: HostModel | None = None,
) -> dict[str, Any]:
    """Run ``spec`` with ``hosts`` simulated hosts under ``root``; returns the figures.

    The poll interval (the server's ``retry_after_s``) is the default 2 s, or longer where
    that many hosts' idle polls would take more than ``TARGET_POLL_LOAD`` of the server at
    the idle-poll CPU cost measured on this database before the run."""
    model = model or HostModel()
    server = SimServer(root)
    try:
        w0 = time.perf_counter()
        await server.setup(hosts, T0)
        baseline = await server.baseline(100)
        # (a later ``now`` than registration, so each poll writes last_contact as in the run)
        samples = [
            (await server.request_work(i * 7919 % hosts, T0 + 1 + i, lambda: 0.5))[1]
            for i in range(41)
        ]
        c_empty = sorted(samples)[len(samples) // 2]
        server.log.cpu.clear()
        server.log.wall.clear()
        needed = hosts * model.availability() * c_empty / TARGET_POLL_LOAD
        cfg = SimConfig(
            hosts=hosts,
            retry_after_s=max(DEFAULT_RETRY_AFTER_S, needed),
            daemon_interval_s=daemon_interval_s,
            seed=seed,
            model=model,
        )
        job_id = await server.submit(spec, T0)
        engine = Engine(cfg, server, t0=T0)
        await engine.run(job_id)
        return await analyse(
            engine,
            server,
            job_id,
            baseline=baseline,
            calibrated_empty_cpu_s=c_empty,
            default_retry_after_s=DEFAULT_RETRY_AFTER_S,
            wall_s=time.perf_counter() - w0,
        )
    finally:
        await server.close()
