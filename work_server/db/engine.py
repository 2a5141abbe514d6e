"""Async database engine and session factory: SQLite by default (one process), PostgreSQL
(``postgresql+asyncpg://...``) for several server processes sharing one database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.db import models as _models  # noqa: F401  (registers the tables)
from work_server.db import sqlite_inloop
from work_server.db.migrate import upgrade

#: how long a statement waits for another process's SQLite write lock. Statements run on the
#: event loop (``sqlite_inloop``), so this bounds how long the server can stall; only the
#: server process writes in normal operation.
_BUSY_TIMEOUT_S = 5.0


def sqlite_url(state_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(state_dir / 'yadml.db').resolve()}"


def make_engine(url: str) -> AsyncEngine:
    """An engine for ``url``. SQLite gets a single pooled connection: SQLite allows one writer
    at a time, and several connections racing for its lock spend their time in its busy
    handler (measured: p99 latency of seconds under load). One connection turns that into an
    orderly asyncio queue; code must not hold a session across slow work (see
    ``daemons.release_connection``)."""
    if url.startswith(("postgresql", "postgres")):
        return _postgres_engine(url)
    if not url.startswith("sqlite"):
        return create_async_engine(url, pool_pre_ping=True)
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        path = database

        async def _in_loop() -> Any:
            return sqlite_inloop.connect(path, busy_timeout_s=_BUSY_TIMEOUT_S)

        engine = create_async_engine(
            url, pool_size=1, max_overflow=0, pool_timeout=60, async_creator=_in_loop
        )
    else:  # in-memory / URI databases keep aiosqlite (and its default pool)
        engine = create_async_engine(url)

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine


def _postgres_engine(url: str) -> AsyncEngine:
    """PostgreSQL through asyncpg: a real pool (writers do not block each other; conflicting
    claims are settled by conditional updates and row locks), pre-ping so a restarted server
    costs one failed checkout, not failed requests. ``postgresql://`` means asyncpg."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+asyncpg://" + url.removeprefix("postgresql://")
    return create_async_engine(
        url, pool_size=10, max_overflow=10, pool_timeout=60, pool_pre_ping=True
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def create_schema(engine: AsyncEngine) -> None:
    """Bring the database to the newest schema: Alembic ``upgrade head`` (both backends;
    idempotent, and safe when several processes start at once; see ``db/migrate.py``)."""
    await upgrade(engine)
