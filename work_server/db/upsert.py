"""``INSERT ... ON CONFLICT DO NOTHING`` on both backends (SQLite and PostgreSQL).

Rows keyed by content (a blob's sha256) may be inserted by two server processes at once:
read-then-insert would let both see "missing" and the second commit would fail on the
primary key. An insert that ignores the conflict settles it inside the database.

``ensure_blob_row`` records a blob the server wrote itself (shards, weights, datasets) or
refreshes its row, so the file deleter's grace period starts again for a reused blob.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.db.models import Blob


async def insert_ignore(session: AsyncSession, model: type[SQLModel], **values: Any) -> bool:
    """Insert one ``model`` row unless one with the same key exists; True when inserted.
    No commit."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(model).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(model).values(**values).on_conflict_do_nothing()
    else:
        raise NotImplementedError(f"insert_ignore: no ON CONFLICT support for {dialect}")
    result = await session.exec(stmt)
    return bool(getattr(result, "rowcount", 0) == 1)


async def ensure_blob_row(
    session: AsyncSession, sha256: str, size: int, kind: str, now: float
) -> Blob:
    """Record a stored blob. An existing row is refreshed (``created_at = now``) so that the
    file deleter's grace period starts again for a blob that is being reused. No commit."""
    row = await session.get(Blob, sha256, populate_existing=True)
    if row is None:
        row = Blob(sha256=sha256, size=size, kind=kind, created_at=now)
    else:
        row.created_at = max(row.created_at, now)
        if kind == "model":
            row.kind = kind
    session.add(row)
    return row
