from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from volunteer_client.api import ServerAPI
from volunteer_client.state import StateDir
from work_server.launch import free_port

from .fake_server import TOKEN, FakeWorkServer, serve


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeWorkServer]:
    """The fake work server (in-memory; the real server has its own end-to-end tests)."""
    async for server in serve(FakeWorkServer()):
        yield server


@pytest.fixture
async def api(fake_server: FakeWorkServer) -> AsyncIterator[ServerAPI]:
    async with ServerAPI(base_url=fake_server.url, token=TOKEN, timeout=5.0) as client:
        yield client


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    s = StateDir(tmp_path / "state")
    s.ensure()
    return s


@pytest.fixture
def dead_url() -> str:
    """A loopback URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"
