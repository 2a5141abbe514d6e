"""Fixtures: the real app built by ``create_app`` on a loopback port, real SQLite.

Daemons are off here; tests drive them with ``run_once`` so every state is explicit.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from aiohttp import web
from aiohttp.test_utils import TestClient
from safetensors.torch import load, save

from work_server import keys
from work_server.app import create_app
from work_server.config import ServerConfig
from work_server.daemons import transitioner
from work_server.daemons.work_generator import start_job
from work_server.db.models import Job
from yadml_common.wire import REPORT_METADATA_KEY, UPLOAD_GRANT_HEADER

OPERATOR = "operator-secret-token"

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(
        state_dir=tmp_path / "var",
        runs_dir=tmp_path / "runs",
        operator_token=OPERATOR,
        run_daemons=False,
    )


@pytest.fixture
async def client(aiohttp_client: Any, config: ServerConfig) -> Client:
    c: Client = await aiohttp_client(create_app(config))
    return c


def op_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {OPERATOR}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(client: Client, name: str = "h1") -> tuple[int, str]:
    r = await client.post("/api/v1/hosts", json={"name": name, "cpus": 2, "memory_mb": 2048})
    assert r.status == 201, await r.text()
    body = await r.json()
    return body["host_id"], body["host_token"]


async def start_digits_job(client: Client, shards: int = 2, **spec: Any) -> int:
    """Submit a digits job and run the job start + transitioner by hand."""
    r = await client.post(
        "/api/v1/jobs",
        json={"dataset": "digits", "shards": shards, "rounds": 2, **spec},
        headers=op_headers(),
    )
    assert r.status == 201, await r.text()
    job_id = int((await r.json())["id"])
    app = client.app
    assert app is not None
    now = time.time()
    async with app[keys.SESSIONMAKER]() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        await start_job(session, job, now, blobs=app[keys.BLOBS], data_dir=None, fashion_dir=None)
        await session.commit()
    async with app[keys.SESSIONMAKER]() as session:
        await transitioner.run_once(session, now)
    return job_id


def make_result(
    weights: bytes,
    *,
    report: dict[str, Any] | None = None,
    change: Callable[[dict[str, torch.Tensor]], object] | None = None,
) -> bytes:
    """A plausible trained result: the input weights nudged, with a training report."""
    tensors = load(weights)
    for t in tensors.values():
        t.add_(0.01)
    if change is not None:
        change(tensors)
    meta = {
        REPORT_METADATA_KEY: json.dumps(
            report or {"train_loss": 0.5, "samples": 100, "elapsed_s": 1.0, "epochs": 1}
        )
    }
    return save(tensors, metadata=meta)


@dataclass
class Unit:
    result_id: int
    upload_url: str
    #: ``upload.grant``: sent as the X-Upload-Grant header, never in the URL
    grant: str
    max_bytes: int
    weights: bytes
    raw: dict[str, Any]

    def upload_headers(self, token: str) -> dict[str, str]:
        """What an upload of this unit sends: the host token and the unit's upload grant."""
        return {**bearer(token), UPLOAD_GRANT_HEADER: self.grant}


async def fetch_unit(client: Client, token: str) -> Unit:
    r = await client.post("/api/v1/work", json={"max_units": 1}, headers=bearer(token))
    assert r.status == 200, await r.text()
    units = (await r.json())["units"]
    assert len(units) == 1, units
    u = units[0]
    w = next(i for i in u["inputs"] if i["name"] == "weights")
    blob = await client.get(w["url"], headers=bearer(token))
    assert blob.status == 200
    up = u["upload"]
    return Unit(u["result_id"], up["url"], up["grant"], up["max_bytes"], await blob.read(), u)


def db_snapshot(config: ServerConfig) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, plus the blob files: to prove a refusal changed nothing."""
    con = sqlite3.connect(config.state_dir / "yadml.db")
    try:
        tables = [
            r[0]
            for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        ]
        snap = {
            t: sorted(map(tuple, con.execute(f'SELECT * FROM "{t}"')), key=repr) for t in tables
        }
    finally:
        con.close()
    snap["__blobs__"] = sorted((p.name,) for p in config.blobs_dir.glob("??/*"))
    return snap


def torn(data: bytes, n: int) -> bytes:
    return io.BytesIO(data).read(n)


async def expect(resp: Any, status: int, error: str | None = None) -> dict[str, Any]:
    """Assert the status (and error code); every refusal is JSON ``{error, detail}`` with a
    reason. Returns the JSON body."""
    assert resp.status == status, (resp.status, await resp.text())
    body: dict[str, Any] = await resp.json()
    if status >= 400:
        assert {"error", "detail"} <= set(body), body
        assert body["detail"], "every refusal says why"
    if error is not None:
        assert body["error"] == error, body
    return body
