"""Schemathesis against ``/api/v1/openapi.json`` of the real app on a loopback port.

Every operation of the document gets generated requests, valid ones (positive mode) and
schema-violating ones (negative mode), with real credentials: a registered host's token
for volunteer operations, the operator token for operator ones. Checks: no 5xx ever,
every response's status code is documented, its content type and body match the
schema. Bounded for CI (``SCHEMATHESIS_EXAMPLES`` examples per operation and mode,
default 10); for a longer local run:

    SCHEMATHESIS_EXAMPLES=500 .venv/bin/python -m pytest -q -s \\
        tests/work_server/api/test_schemathesis.py
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from aiohttp import web
from argon2 import PasswordHasher
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from sqlmodel import select

from work_server import keys
from work_server.app import create_app
from work_server.config import ServerConfig
from work_server.daemons import transitioner
from work_server.daemons.work_generator import start_job
from work_server.db.models import Job
from work_server.ratelimit import Rate
from work_server.web.auth import Passwords, create_operator

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "10"))
OPERATOR = "schemathesis-operator-token"
T = TypeVar("T")


class LiveServer:
    """The app in its own thread and event loop, so that the synchronous schemathesis
    client can call it while the server keeps serving."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.app = create_app(config)
        self.runner = web.AppRunner(self.app)
        self.url = ""
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def start(self) -> None:
        self._thread.start()
        self.run(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.run(site.start())
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    def stop(self) -> None:
        self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()

    async def start_digits_job(self) -> None:
        now = time.time()
        async with self.app[keys.SESSIONMAKER]() as session:
            for job in (await session.exec(select(Job))).all():
                await start_job(
                    session, job, now, blobs=self.app[keys.BLOBS], data_dir=None, fashion_dir=None
                )
            await session.commit()
        async with self.app[keys.SESSIONMAKER]() as session:
            await transitioner.run_once(session, now)

    async def add_operator(self, name: str) -> None:
        fast = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        async with self.app[keys.SESSIONMAKER]() as session:
            await create_operator(
                session, name, "fuzzing password", passwords=fast, now=time.time()
            )


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    config = ServerConfig(
        state_dir=tmp_path / "var",
        runs_dir=tmp_path / "runs",
        operator_token=OPERATOR,
        run_daemons=False,
        max_running_jobs=100,
        rate_register_per_ip=Rate(1000.0, 100000.0),
        rate_work_per_ip=Rate(1000.0, 100000.0),
        rate_work_per_host=Rate(1000.0, 100000.0),
    )
    server = LiveServer(config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _fuzz(strategy: Any, url: str, headers: dict[str, str], seen: Counter[int]) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=url, headers=headers, timeout=30)
        seen[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    run()


# operations that change what others see run last: cancelling the job, banning hosts
_LAST = ("/cancel", "/ban")


def test_api_conforms_to_its_openapi_document(live: LiveServer) -> None:
    op = {"Authorization": f"Bearer {OPERATOR}"}
    with httpx.Client(base_url=live.url, timeout=30) as http:
        job = {"dataset": "digits", "shards": 2}
        assert http.post("/api/v1/jobs", json=job, headers=op).is_success
        live.run(live.start_digits_job())
        host = http.post("/api/v1/hosts", json={"name": "fuzzer"}).json()
        victim = http.post("/api/v1/hosts", json={"name": "victim"}).json()
        live.run(live.add_operator("fuzz"))
        token = {"operator": "fuzz", "scopes": ["read"]}
        revocable = http.post("/api/v1/tokens", json=token, headers=op).json()
        document = http.get("/api/v1/openapi.json").json()
    host_auth = {"Authorization": f"Bearer {host['host_token']}"}
    # operations aimed at one real target: a host to ban, a token to revoke
    pins = {
        "/ban": {"host_id": str(victim["host_id"])},
        "/tokens/{token_id}": {"token_id": str(revocable["id"])},
    }
    schema = schemathesis.openapi.from_dict(document)

    operations = [r.ok() for r in schema.get_all_operations()]
    operations.sort(key=lambda o: any(o.path.endswith(s) for s in _LAST))
    assert len(operations) >= 15
    statuses: dict[str, Counter[int]] = {}

    for operation in operations:
        security = operation.definition.raw.get("security") or []
        names = {name for requirement in security for name in requirement}
        headers = op if names == {"operatorToken"} else host_auth if names else {}
        pinned = next((v for end, v in pins.items() if operation.path.endswith(end)), None)
        seen = statuses.setdefault(operation.label, Counter())
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=pinned)
            try:
                _fuzz(strategy, live.url, headers, seen)
            except Unsatisfiable:
                # nothing to negate (no parameters or body): only positive cases exist
                assert mode is GenerationMode.NEGATIVE, operation.label

    total = sum(sum(c.values()) for c in statuses.values())
    summary = "\n".join(
        f"  {label:50s} {dict(sorted(c.items()))}" for label, c in sorted(statuses.items())
    )
    print(f"\nschemathesis: {len(statuses)} operations, {total} requests, 0 failures\n{summary}")
    assert all(code < 500 for c in statuses.values() for code in c)
    assert total >= len(statuses) * EXAMPLES  # every operation was really exercised
