"""An in-loop SQLite connection for SQLAlchemy's ``sqlite+aiosqlite`` dialect.

aiosqlite runs every DB-API call on a helper thread and hands the answer back through
``call_soon_threadsafe``: two thread switches and a trip through the event loop's queue per
statement. Under load that round trip, not SQLite, is the cost (measured: ~2 ms per statement
against ~0.02 ms for the statement itself), and with one writer connection it serialises the
whole server. This module offers the same async surface as ``aiosqlite.Connection`` but runs
each call directly on the event loop's thread, which is what SQLite is good at: statements take
microseconds, WAL + ``synchronous=NORMAL`` commits do not fsync, and there is only one writer.

It is plugged in through SQLAlchemy's public ``async_creator`` hook
(:func:`work_server.db.engine.make_engine`), so sessions, the ORM and the dialect's SQL are
unchanged. The price: a slow statement blocks the loop for its duration, so the server keeps a
short ``busy_timeout`` and the daemons never hold a session across slow work
(``work_server.daemons.release_connection``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any


class _Cursor:
    """The async cursor surface SQLAlchemy's adapter awaits, over a ``sqlite3.Cursor``."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> _Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Any = None) -> _Cursor:
        if parameters is None:
            self._cursor.execute(sql)
        else:
            self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> _Cursor:
        self._cursor.executemany(sql, seq_of_parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class _ImmediateQueue:
    """Stands in for aiosqlite's work queue, which SQLAlchemy uses directly (and only) to
    set the isolation level: the function runs at once and its future is resolved."""

    __slots__ = ()

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:  # handed to the awaiting adapter, as aiosqlite does
            future.set_exception(exc)


class InLoopConnection:
    """``aiosqlite.Connection``'s surface, run synchronously on the calling thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._tx = _ImmediateQueue()

    @property
    def _connection(self) -> sqlite3.Connection | None:  # SQLAlchemy checks it is open
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> _Cursor:
        return _Cursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> _Cursor:
        return await self.cursor().execute(sql, parameters)

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self._conn.close()

    def stop(self) -> None:
        self._conn.close()

    async def create_function(self, *args: Any, **kw: Any) -> None:
        self._conn.create_function(*args, **kw)


def connect(path: str, *, busy_timeout_s: float) -> InLoopConnection:
    """Open ``path`` the way the ``sqlite+aiosqlite`` dialect expects its driver to.

    ``check_same_thread=False`` because engine disposal may run on another thread at exit;
    all statements still run on the loop's thread, one at a time.
    """
    conn = sqlite3.connect(
        path,
        timeout=busy_timeout_s,
        check_same_thread=False,
        detect_types=0,
    )
    return InLoopConnection(conn)
