"""The in-loop SQLite driver: statements run on the event loop's thread, and SQLAlchemy's
transaction, error and isolation handling work through it as through aiosqlite."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from work_server.db import sqlite_inloop
from work_server.db.engine import make_engine


async def _thread_of_statements(engine_url: str) -> tuple[int, object]:
    engine = make_engine(engine_url)
    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert isinstance(driver, sqlite_inloop.InLoopConnection)
            driver._conn.create_function("tid", 0, threading.get_ident)
            tid = (await conn.execute(text("SELECT tid()"))).scalar_one()
            return int(tid), driver
    finally:
        await engine.dispose()


def test_statements_run_on_the_loop_thread(tmp_path: Path) -> None:
    tid, _ = asyncio.run(_thread_of_statements(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"))
    assert tid == threading.get_ident()


def test_in_memory_databases_keep_aiosqlite() -> None:
    async def kind() -> str:
        engine = make_engine("sqlite+aiosqlite:///:memory:")
        try:
            async with engine.connect() as conn:
                raw = await conn.get_raw_connection()
                return type(raw.driver_connection).__module__
        finally:
            await engine.dispose()

    assert asyncio.run(kind()).startswith("aiosqlite")


def test_commit_rollback_and_errors(tmp_path: Path) -> None:
    async def scenario() -> list[int]:
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")

        async def insert_a_duplicate_after_a_new_row() -> None:
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO t VALUES (2)"))
                await conn.execute(text("INSERT INTO t VALUES (1)"))

        try:
            async with engine.begin() as conn:
                await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
                await conn.execute(text("INSERT INTO t VALUES (1)"))
            with pytest.raises(IntegrityError):  # the driver's error, mapped by SQLAlchemy
                await insert_a_duplicate_after_a_new_row()
            async with engine.connect() as conn:
                await conn.execute(text("INSERT INTO t VALUES (3)"))
                await conn.rollback()
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                rows = (await conn.execute(text("SELECT id FROM t ORDER BY id"))).scalars()
                return list(rows)
        finally:
            await engine.dispose()

    assert asyncio.run(scenario()) == [1]  # 2 rolled back with the failed transaction, 3 too
