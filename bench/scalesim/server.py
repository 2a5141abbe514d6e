"""The real scheduling code on a real SQLite database, every call timed.

Each method does what the matching API handler (``work_server/api/volunteer.py``) does
between parsing the request and writing the response: authenticate the host by its token,
then call the service (``dispatch.claim_work``, ``uploads.prepare_upload`` +
``accept_upload``, ``uploads.report_failure``, ``hosts.heartbeat``) with the simulated
``now``. The daemons are their real ``run_once(session, now, *, deps)``. HTTP parsing, JSON
encoding, upload grants and work-unit signatures are not included (see
``bench/dispatch_throughput.py`` for the HTTP stack). CPU is ``time.process_time`` (all
threads of this process: aiosqlite's connection thread and the daemons' worker threads
included) around each call; nothing else runs in the process meanwhile.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from sqlalchemy import func, insert, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.blobs import BlobStore
from work_server.daemons.roster import ROSTER, DaemonDeps
from work_server.db.engine import create_schema, make_engine, make_sessionmaker, sqlite_url
from work_server.db.models import Host, Job, Result, Round, ServerState
from work_server.errors import Gone
from work_server.job_spec import JobSpec
from work_server.ml.shards import decode_weights, encode_weights
from work_server.services import dispatch, hosts, jobs, uploads
from yadml_common.wire import (
    REPORT_METADATA_KEY,
    FailureReport,
    HeartbeatRequest,
    RunningUnit,
    TrainReport,
)

T = TypeVar("T")
#: simulated outputs kept (both replicas of a unit upload the same bytes); ~250 kB each
PAYLOAD_CACHE = 1200


@dataclass
class CpuLog:
    """CPU and wall seconds per operation name."""

    cpu: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    wall: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, xs in sorted(self.cpu.items()):
            ws = self.wall[name]
            out[name] = {
                "count": len(xs),
                "cpu_s": sum(xs),
                "cpu_ms_mean": 1000 * sum(xs) / len(xs),
                "cpu_ms_median": 1000 * sorted(xs)[len(xs) // 2],
                "wall_ms_mean": 1000 * sum(ws) / len(ws),
            }
        return out


@dataclass(frozen=True)
class Claim:
    result_id: int
    workunit_id: int
    weights_sha256: str
    deadline: float
    num_samples: int


class SimServer:
    """A state directory with the schema, ``n_hosts`` host rows and a blob store."""

    def __init__(self, root: Path, *, blob_grace_s: float = 3600.0) -> None:
        self.root = root
        state = root / "var"
        state.mkdir(parents=True, exist_ok=True)
        self.engine: AsyncEngine = make_engine(sqlite_url(state))
        self.sessionmaker: async_sessionmaker[AsyncSession] = make_sessionmaker(self.engine)
        self.blobs = BlobStore(state / "blobs")
        self.specs = uploads.WeightsSpecCache(self.blobs)
        self.runs_dir = root / "runs"
        self.blob_grace_s = blob_grace_s
        self.daemon_deps = DaemonDeps(
            blobs=self.blobs, runs_dir=self.runs_dir, blob_grace_s=blob_grace_s
        )
        self.daemon_specs = {spec.name: spec for spec in ROSTER}
        self.log = CpuLog()
        self.tokens: list[str] = []
        self.host_ids: list[int] = []
        self._payloads: dict[int, bytes] = {}
        self._weights: dict[str, dict[str, torch.Tensor]] = {}

    # ------------------------------------------------------------------ setup (not timed)

    async def setup(self, n_hosts: int, now: float) -> None:
        await create_schema(self.engine)
        self.tokens = [secrets.token_urlsafe(32) for _ in range(n_hosts)]
        rows = [
            {
                "name": f"sim{i}",
                "os": "linux",
                "arch": "x86_64",
                "cpus": 4,
                "memory_mb": 8192,
                "runtimes": ["process"],
                "token_hash": hashlib.sha256(tok.encode()).hexdigest(),
                "created_at": now,
                "last_contact": now,
            }
            for i, tok in enumerate(self.tokens)
        ]
        async with self.engine.begin() as conn:
            for start in range(0, len(rows), 20000):
                await conn.execute(insert(Host), rows[start : start + 20000])
            ids = (await conn.execute(text("SELECT id FROM host ORDER BY id"))).scalars().all()
        self.host_ids = [int(i) for i in ids]

    async def submit(self, spec: JobSpec, now: float) -> int:
        async with self.sessionmaker() as session:
            job = await jobs.submit_job(session, spec, max_running_jobs=1, now=now)
        assert job.id is not None
        return job.id

    async def close(self) -> None:
        await self.engine.dispose()

    # ------------------------------------------------------------------ timing

    async def _timed(self, name: str, fn: Callable[[], Awaitable[T]]) -> tuple[T, float]:
        c0, w0 = time.process_time(), time.perf_counter()
        out = await fn()
        cpu = time.process_time() - c0
        self.log.cpu[name].append(cpu)
        self.log.wall[name].append(time.perf_counter() - w0)
        return out, cpu

    # ------------------------------------------------------------------ volunteer requests

    async def request_work(
        self, host: int, now: float, draw: Callable[[], float]
    ) -> tuple[list[Claim], float]:
        async def run() -> list[Claim]:
            async with self.sessionmaker() as session:
                h = await hosts.authenticate_host(session, self.tokens[host], now)
                claimed = await dispatch.claim_work(
                    session, h, max_units=1, runtimes=None, now=now, draw=draw
                )
            return [
                Claim(
                    c.result_id,
                    c.workunit.id or 0,
                    c.workunit.weights_sha256,
                    c.deadline,
                    c.workunit.num_samples,
                )
                for c in claimed
            ]

        claims, cpu = await self._timed("work_request", run)
        name = "work_request_claim" if claims else "work_request_empty"
        self.log.cpu[name].append(cpu)
        self.log.wall[name].append(self.log.wall["work_request"][-1])
        return claims, cpu

    async def upload(self, host: int, claim: Claim, now: float) -> tuple[str, float]:
        """Upload the result of ``claim``: 'accepted', 'late' (accepted after its deadline)
        or 'gone' (no longer wanted; the server answered 410)."""
        body = self.payload(claim)

        async def run() -> str:
            async with self.sessionmaker() as session:
                h = await hosts.authenticate_host(session, self.tokens[host], now)
                try:
                    target = await uploads.prepare_upload(session, h, claim.result_id)
                except Gone:
                    return "gone"
                session.expunge_all()
                await session.rollback()
                try:
                    _, _, late = await uploads.accept_upload(
                        session, target, body, blobs=self.blobs, specs=self.specs, now=now
                    )
                except Gone:
                    return "gone"
            return "late" if late else "accepted"

        return await self._timed("upload", run)

    async def failure(self, host: int, claim: Claim, now: float) -> tuple[bool, float]:
        body = FailureReport(reason="crash", detail="simulated client error")

        async def run() -> bool:
            async with self.sessionmaker() as session:
                h = await hosts.authenticate_host(session, self.tokens[host], now)
                try:
                    return await uploads.report_failure(session, h, claim.result_id, body, now)
                except Gone:
                    return False

        return await self._timed("failure_report", run)

    async def heartbeat(self, host: int, claim: Claim, now: float) -> tuple[list[int], float]:
        body = HeartbeatRequest(running=[RunningUnit(result_id=claim.result_id, fraction_done=0.5)])

        async def run() -> list[int]:
            async with self.sessionmaker() as session:
                h = await hosts.authenticate_host(session, self.tokens[host], now)
                return await hosts.heartbeat(session, h, body, now)

        return await self._timed("heartbeat", run)

    # ------------------------------------------------------------------ daemons

    async def daemon(self, name: str, now: float, *, woken: bool = False) -> tuple[int, float]:
        """One pass, logged also as ``<name>_busy`` (it handled something), ``<name>_idle``
        (a scheduled pass with nothing to do) or ``<name>_woken_idle`` (woken for nothing)."""

        spec = self.daemon_specs[name]

        async def run() -> int:
            async with self.sessionmaker() as session:
                return await spec.run_once(session, now, self.daemon_deps)

        handled, cpu = await self._timed(name, run)
        split = f"{name}_busy" if handled else f"{name}_woken_idle" if woken else f"{name}_idle"
        self.log.cpu[split].append(cpu)
        self.log.wall[split].append(self.log.wall[name][-1])
        return handled, cpu

    # ------------------------------------------------------------------ baselines

    async def baseline(self, reps: int) -> dict[str, float]:
        """CPU ms of an empty transaction and of the bare claim ``UPDATE`` (one row, same
        session machinery), the floor every request pays."""

        async def empty() -> None:
            async with self.sessionmaker() as session:
                await session.exec(select(1))
                await session.commit()

        async def bare_update() -> None:
            async with self.sessionmaker() as session:
                await session.exec(
                    update(Result)
                    .where(col(Result.id) == 1, col(Result.server_state) == ServerState.unsent)
                    .values(server_state=ServerState.unsent)
                    .execution_options(synchronize_session=False)
                )
                await session.commit()

        out = {}
        for name, fn in (("empty_transaction", empty), ("bare_claim_update", bare_update)):
            cpus = []
            for _ in range(reps):
                c0 = time.process_time()
                await fn()
                cpus.append(time.process_time() - c0)
            cpus.sort()
            out[name] = 1000 * cpus[len(cpus) // 2]
        return out

    # ------------------------------------------------------------------ bookkeeping (not timed)

    async def unsent(self) -> int:
        async with self.sessionmaker() as session:
            n = (
                await session.exec(
                    select(func.count())
                    .select_from(Result)
                    .where(col(Result.server_state) == ServerState.unsent)
                )
            ).one()
        return int(n)

    async def job_state(self, job_id: int) -> str:
        async with self.sessionmaker() as session:
            job = await session.get(Job, job_id)
            assert job is not None
            return job.state

    async def rows(self, model: type[Any]) -> list[Any]:
        async with self.sessionmaker() as session:
            return list((await session.exec(select(model))).all())

    async def rounds(self, job_id: int) -> list[Round]:
        async with self.sessionmaker() as session:
            return list(
                (
                    await session.exec(
                        select(Round).where(Round.job_id == job_id).order_by(col(Round.number))
                    )
                ).all()
            )

    def payload(self, claim: Claim) -> bytes:
        """The simulated training output: the unit's input weights plus a small update that
        depends only on the work unit, so that replicas agree (LeNet-sized, ~250 kB)."""
        body = self._payloads.get(claim.workunit_id)
        if body is not None:
            return body
        weights = self._weights.get(claim.weights_sha256)
        if weights is None:  # a new round (or a late result of the previous one)
            weights = decode_weights(self.blobs.get(claim.weights_sha256))
            self._weights[claim.weights_sha256] = weights
            while len(self._weights) > 2:
                self._weights.pop(next(iter(self._weights)))
        gen = torch.Generator().manual_seed(claim.workunit_id)
        update_ = {
            k: v + 1e-3 * torch.randn(v.shape, generator=gen, dtype=v.dtype)
            for k, v in weights.items()
        }
        report = TrainReport(train_loss=0.5, samples=claim.num_samples, elapsed_s=60.0)
        body = encode_weights(update_, {REPORT_METADATA_KEY: report.model_dump_json()})
        self._payloads[claim.workunit_id] = body
        while len(self._payloads) > PAYLOAD_CACHE:
            self._payloads.pop(next(iter(self._payloads)))
        return body
