"""Which server process runs the daemons: exactly one at a time (BOINC runs each daemon once
per project, on whichever machine ``config.xml`` names; we elect it instead).

Every server process serves the API; the daemons (``daemons.roster``) run only in the
process that holds the *daemon lock*:

* **PostgreSQL**: a session-level advisory lock (``pg_try_advisory_lock``) taken on a
  dedicated connection kept open for as long as the process leads. When the process dies,
  its connection closes and PostgreSQL releases the lock; the other processes try to take it
  every ``retry_s`` seconds, so one of them leads within about that time. The leader checks
  its connection on the same beat and stops running daemons as soon as the check fails.
* **SQLite** (one server process by design): an exclusive ``flock`` on a file next to the
  state, which also keeps a second server started by mistake on the same state directory
  from running the daemons twice; the kernel releases it when the process dies.

Advisory locks are scoped to one database, so projects sharing a PostgreSQL server do not
contend.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from pathlib import Path
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

#: pg_advisory_lock key of the daemon lock ("yadml-dm")
DAEMON_LOCK_KEY = 0x7961646D6C2D646D


class Leadership(Protocol):
    """A lock at most one process holds."""

    @property
    def held(self) -> bool: ...

    async def try_acquire(self) -> bool:
        """Take the lock if it is free; when already held, check that it still is. Returns
        whether this process holds it now. Never blocks for long."""
        ...

    async def release(self) -> None: ...


class PostgresLeadership:
    """The daemon lock as a PostgreSQL session-level advisory lock (see module docstring)."""

    def __init__(
        self, engine: AsyncEngine, *, key: int = DAEMON_LOCK_KEY, timeout_s: float = 5.0
    ) -> None:
        self._engine = engine
        self._key = key
        self._timeout_s = timeout_s
        self._conn: AsyncConnection | None = None
        self._mutex = asyncio.Lock()  # one statement at a time on the lock's connection

    @property
    def held(self) -> bool:
        return self._conn is not None

    async def try_acquire(self) -> bool:
        async with self._mutex:
            return await self._try_acquire_bounded()

    async def _try_acquire_bounded(self) -> bool:
        try:
            return await asyncio.wait_for(self._try_acquire(), self._timeout_s)
        except Exception as exc:
            log.warning("daemon lock: %s: %s", type(exc).__name__, exc)
            await self._drop()
            return False

    async def _try_acquire(self) -> bool:
        if self._conn is not None:
            # the lock lives exactly as long as this connection's session
            await self._conn.execute(text("SELECT 1"))
            return True
        conn = await self._engine.connect()
        try:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            got = (
                await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key})
            ).scalar_one()
        except BaseException:
            await conn.invalidate()
            await conn.close()
            raise
        if not got:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def _drop(self) -> None:
        """Forget the lock's connection without reusing it: closing the session is what
        releases the lock, so it must not go back to the pool still holding it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await conn.invalidate()
            await conn.close()
        except Exception:  # the connection is already broken: nothing left to release
            log.debug("daemon lock: closing a broken connection failed", exc_info=True)

    async def release(self) -> None:
        async with self._mutex:
            await self._release()

    async def _release(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            await asyncio.wait_for(
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key}),
                self._timeout_s,
            )
        except Exception:
            log.debug("daemon lock: unlock failed; closing the session releases it", exc_info=True)
        await self._drop()


class FileLeadership:
    """The daemon lock as an exclusive ``flock`` on ``path`` (SQLite: one process)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    async def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock


def make_leadership(engine: AsyncEngine, *, lock_file: Path) -> Leadership | None:
    """The daemon lock for ``engine``'s backend; None (always lead) for other backends."""
    name = engine.dialect.name
    if name == "postgresql":
        return PostgresLeadership(engine)
    if name == "sqlite":
        return FileLeadership(lock_file)
    return None
