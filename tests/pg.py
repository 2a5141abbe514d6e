"""PostgreSQL for tests: the server ``make postgres`` (scripts/postgres.sh) starts on loopback,
named by ``YADML_TEST_PG_URL``; every test gets a database of its own, dropped afterwards.

``require_postgres()`` skips when no server is reachable, and fails under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.requirements import require

ENV = "YADML_TEST_PG_URL"


def admin_url() -> str | None:
    return os.environ.get(ENV) or None


async def _admin(url: str, sql: str) -> None:
    """One statement outside a transaction (CREATE/DROP DATABASE need that)."""
    engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def _reachable(url: str) -> str | None:
    try:
        await asyncio.wait_for(_admin(url, "SELECT 1"), 10)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def require_postgres() -> str:
    """The admin URL of the test server (skips, or fails under CI, when there is none)."""
    url = admin_url()
    require(url is not None, f"PostgreSQL: {ENV} is not set (make test starts a server)")
    assert url is not None
    problem = asyncio.run(_reachable(url))
    require(problem is None, f"PostgreSQL at {ENV} is not reachable: {problem}")
    return url


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """A new empty database on the server of ``url`` (its role needs CREATEDB); yields its
    SQLAlchemy URL and drops it afterwards, disconnecting whoever is still connected."""
    name = f"yadml_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
