"""Fixtures for the web pages: the real app (daemons off), a fast argon2 hasher, a
recording sleep for the login delay, and a logged-in client."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from argon2 import PasswordHasher

from work_server import keys
from work_server.app import create_app
from work_server.config import ServerConfig
from work_server.web.auth import WEB_AUTH, LoginThrottle, Passwords, WebAuth, create_operator

Client = TestClient[web.Request, web.Application]

USER = "alice"
PASSWORD = "correct horse battery staple"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Sleeps:
    """Stands in for asyncio.sleep: records the delays instead of waiting."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(
        state_dir=tmp_path / "var",
        runs_dir=tmp_path / "runs",
        operator_token="api-token-for-tests",
        run_daemons=False,
    )


def fast_auth(sleeps: Sleeps) -> WebAuth:
    # small argon2 parameters keep the suite quick; production uses the RFC 9106 defaults
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    return WebAuth(passwords=Passwords(hasher), throttle=LoginThrottle(sleep=sleeps))


@pytest.fixture
async def client(aiohttp_client: Any, config: ServerConfig, sleeps: Sleeps) -> Client:
    app = create_app(config)
    app[WEB_AUTH] = fast_auth(sleeps)
    c: Client = await aiohttp_client(app)
    assert c.app is not None
    async with c.app[keys.SESSIONMAKER]() as session:
        await create_operator(
            session, USER, PASSWORD, passwords=c.app[WEB_AUTH].passwords, now=time.time()
        )
    return c


def csrf_of(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "no csrf_token field in the page"
    return m.group(1)


async def login(client: Client, user: str = USER, password: str = PASSWORD) -> Any:
    page = await client.get("/login")
    assert page.status == 200
    token = csrf_of(await page.text())
    return await client.post(
        "/login",
        data={"csrf_token": token, "username": user, "password": password, "next": "/dashboard"},
        allow_redirects=False,
    )


@pytest.fixture
async def logged_in(client: Client) -> Client:
    r = await login(client)
    assert r.status == 303, await r.text()
    return client


async def page_csrf(client: Client, path: str = "/dashboard") -> str:
    r = await client.get(path)
    assert r.status == 200, await r.text()
    return csrf_of(await r.text())
