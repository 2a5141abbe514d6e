"""``INSERT ... ON CONFLICT DO NOTHING`` on both backends (SQLite and PostgreSQL).

Rows keyed by content (a blob's sha256) may be inserted by two server processes at once:
read-then-insert would let both see "missing" and the second commit would fail on the
primary key. An insert that ignores the conflict settles it inside the database.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession


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
