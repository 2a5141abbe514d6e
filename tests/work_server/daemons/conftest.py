"""A real SQLite database in tmp_path, a blob store, and a ``Sim`` that plays the API and the
volunteers by editing rows the way the API handlers do."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.blobs import BlobStore
from work_server.daemons import (
    file_deleter,
    job_finisher,
    round_closer,
    transitioner,
    validator,
    work_generator,
)
from work_server.db.engine import create_schema, make_engine, make_sessionmaker
from work_server.db.models import (
    Blob,
    Host,
    Job,
    Outcome,
    Result,
    Round,
    ServerState,
    WorkUnit,
)
from work_server.job_spec import JobSpec, ReplicationPolicy
from yadml_common.wire import REPORT_METADATA_KEY

T0 = 1_000_000.0  # the tests' clock starts here


def make_spec(**overrides: Any) -> JobSpec:
    base: dict[str, Any] = {"dataset": "digits", "shards": 2, "rounds": 2, "seed": 7}
    rep = overrides.pop("replication", {})
    base.update(overrides)
    return JobSpec(**base, replication=ReplicationPolicy(**{"delay_bound_s": 100.0, **rep}))


@dataclass
class Sim:
    sm: async_sessionmaker[AsyncSession]
    blobs: BlobStore
    runs_dir: Path

    # ------------------------------------------------------------------ daemons

    async def transition(self, now: float) -> int:
        async with self.sm() as s:
            return await transitioner.run_once(s, now)

    async def validate(self, now: float) -> int:
        async with self.sm() as s:
            return await validator.run_once(s, now, blobs=self.blobs)

    async def generate_work(self, now: float) -> int:
        async with self.sm() as s:
            return await work_generator.run_once(s, now, blobs=self.blobs)

    async def close_rounds(self, now: float) -> int:
        async with self.sm() as s:
            return await round_closer.run_once(s, now, blobs=self.blobs, runs_dir=self.runs_dir)

    async def finish_jobs(self, now: float) -> int:
        async with self.sm() as s:
            return await job_finisher.run_once(s, now, runs_dir=self.runs_dir)

    async def advance(self, now: float) -> dict[str, int]:
        """Round closer -> work generator -> job finisher, in pipeline order: what the one
        aggregator pass did before it was split. Returns what each handled."""
        return {
            round_closer.NAME: await self.close_rounds(now),
            work_generator.NAME: await self.generate_work(now),
            job_finisher.NAME: await self.finish_jobs(now),
        }

    async def delete_files(self, now: float, grace_s: float) -> int:
        async with self.sm() as s:
            return await file_deleter.run_once(s, now, blobs=self.blobs, grace_s=grace_s)

    async def cycle(self, now: float) -> None:
        """transitioner -> validator -> transitioner (as the scheduler would, roughly)."""
        await self.transition(now)
        await self.validate(now)
        await self.transition(now)

    # ------------------------------------------------------------------ rows

    async def add_job(self, spec: JobSpec, now: float = T0) -> int:
        async with self.sm() as s:
            job = Job(spec=spec.model_dump(mode="json"), created_at=now)
            s.add(job)
            await s.commit()
            assert job.id is not None
            return job.id

    async def start(self, spec: JobSpec, now: float = T0) -> int:
        job_id = await self.add_job(spec, now)
        await self.generate_work(now)
        return job_id

    async def add_host(self, name: str = "h", now: float = T0) -> int:
        async with self.sm() as s:
            host = Host(
                name=name,
                os="linux",
                arch="x86_64",
                cpus=2,
                memory_mb=2048,
                runtimes=["process"],
                token_hash=f"hash-{name}",
                created_at=now,
                last_contact=now,
            )
            s.add(host)
            await s.commit()
            assert host.id is not None
            return host.id

    async def get(self, model: Any, ident: Any) -> Any:
        async with self.sm() as s:
            return await s.get(model, ident)

    async def all(self, model: Any, *where: Any) -> list[Any]:
        async with self.sm() as s:
            stmt = select(model).where(*where) if where else select(model)
            return list((await s.exec(stmt.order_by(model.__table__.c[_pk(model)]))).all())

    async def wus(self, job_id: int, round_number: int | None = None) -> list[WorkUnit]:
        async with self.sm() as s:
            stmt = select(WorkUnit).where(col(WorkUnit.job_id) == job_id)
            if round_number is not None:
                rnd = (
                    await s.exec(
                        select(Round).where(
                            col(Round.job_id) == job_id, col(Round.number) == round_number
                        )
                    )
                ).one()
                stmt = stmt.where(col(WorkUnit.round_id) == rnd.id)
            return list((await s.exec(stmt.order_by(col(WorkUnit.id)))).all())

    async def results(self, wu_id: int | None) -> list[Result]:
        return await self.all(Result, col(Result.workunit_id) == wu_id)

    async def set_wu(self, wu_id: int | None, **values: Any) -> None:
        async with self.sm() as s:
            await s.exec(update(WorkUnit).where(col(WorkUnit.id) == wu_id).values(**values))
            await s.commit()

    # ------------------------------------------------------------------ API side

    async def claim(self, result_id: int | None, host_id: int, now: float) -> Result:
        """What POST /work does for one result."""
        async with self.sm() as s:
            r = await s.get(Result, result_id)
            assert r is not None
            assert r.server_state == ServerState.unsent
            wu = await s.get(WorkUnit, r.workunit_id)
            assert wu is not None
            r.server_state = ServerState.in_progress
            r.host_id = host_id
            r.sent_at = now
            r.deadline = now + wu.delay_bound_s
            r.runtime = "process"
            wu.transition_time = min(wu.transition_time, r.deadline)
            s.add(r)
            s.add(wu)
            await s.commit()
            return r

    async def claim_all(self, wu_id: int | None, host_ids: list[int], now: float) -> list[Result]:
        unsent = [r for r in await self.results(wu_id) if r.server_state == ServerState.unsent]
        return [await self.claim(r.id, h, now) for r, h in zip(unsent, host_ids, strict=False)]

    def output(
        self, wu: WorkUnit, *, noise: float = 0.0, seed: int = 0, nan: bool = False
    ) -> bytes:
        """A trained-looking output: the input weights + noise, with a report."""
        weights = load_safetensors(self.blobs.get(wu.weights_sha256))
        gen = torch.Generator().manual_seed(seed)
        out = {  # sorted: safetensors does not keep the order
            k: (weights[k] + noise * torch.randn(weights[k].shape, generator=gen)).contiguous()
            for k in sorted(weights)
        }
        if nan:
            first = next(iter(out))
            out[first].view(-1)[0] = float("nan")
        report = {"train_loss": 0.5, "samples": wu.num_samples, "elapsed_s": 1.0, "epochs": 1}
        return bytes(save_safetensors(out, metadata={REPORT_METADATA_KEY: json.dumps(report)}))

    async def upload(
        self, result_id: int | None, now: float, data: bytes | None = None, **kw: Any
    ) -> str:
        """What PUT /results/{id} does (after its own checks)."""
        async with self.sm() as s:
            r = await s.get(Result, result_id)
            assert r is not None
            wu = await s.get(WorkUnit, r.workunit_id)
            assert wu is not None
            if data is None:
                data = self.output(wu, **kw)
            sha = self.blobs.put(data)
            if await s.get(Blob, sha) is None:
                s.add(Blob(sha256=sha, size=len(data), kind="result", created_at=now))
            late = r.server_state == ServerState.over
            r.server_state = ServerState.over
            r.outcome = Outcome.success
            r.received_at = now
            r.output_sha256 = sha
            r.output_size = len(data)
            r.report = {"train_loss": 0.5, "samples": 1, "elapsed_s": 1.0, "epochs": 1}
            r.late = late
            wu.transition_time = now
            s.add(r)
            s.add(wu)
            await s.commit()
            return sha

    async def fail(self, result_id: int | None, now: float) -> None:
        """What POST /results/{id}/failure does."""
        async with self.sm() as s:
            r = await s.get(Result, result_id)
            assert r is not None
            r.server_state = ServerState.over
            r.outcome = Outcome.client_error
            r.received_at = now
            r.error_reason = "crash"
            s.add(r)
            await s.exec(
                update(WorkUnit)
                .where(col(WorkUnit.id) == r.workunit_id)
                .values(transition_time=now)
            )
            await s.commit()

    async def complete_round(
        self, job_id: int, round_number: int, host_id: int, now: float, noise: float = 0.01
    ) -> None:
        """Every work unit of the round: claim, upload, validate."""
        await self.transition(now)
        for i, wu in enumerate(await self.wus(job_id, round_number)):
            for r in await self.claim_all(wu.id, [host_id], now):
                await self.upload(r.id, now, noise=noise, seed=i)
        await self.cycle(now)


def _pk(model: Any) -> str:
    return "sha256" if model is Blob else ("name" if model.__name__ == "DaemonRun" else "id")


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Sim]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'test.db'}")
    await create_schema(engine)
    try:
        yield Sim(
            sm=make_sessionmaker(engine),
            blobs=BlobStore(tmp_path / "blobs"),
            runs_dir=tmp_path / "runs",
        )
    finally:
        await engine.dispose()
