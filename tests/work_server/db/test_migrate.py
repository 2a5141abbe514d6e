"""Migrations beyond the contract: databases made before migrations existed, the developer's
``db revision``, and the ``yadml-server db`` commands (on both backends via ``db_url``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from work_server.cli import main
from work_server.db import migrate
from work_server.db.engine import create_schema, make_engine


async def _initial_tables(tmp_path: Path) -> set[str]:
    """The tables of the initial revision: what ``create_all`` made before migrations."""
    scratch = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'initial.db'}")
    try:
        await migrate.upgrade(scratch, migrate.INITIAL_REVISION)
        async with scratch.connect() as conn:
            names = await conn.run_sync(lambda c: inspect(c).get_table_names())
    finally:
        await scratch.dispose()
    return set(names) - {"alembic_version"}


async def test_a_database_made_by_create_all_is_stamped_then_upgraded(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    initial = await _initial_tables(tmp_path)
    tables = [t for t in SQLModel.metadata.sorted_tables if t.name in initial]

    def create_initial(conn: Connection) -> None:
        SQLModel.metadata.create_all(conn, tables=tables)

    async with engine.begin() as conn:
        await conn.run_sync(create_initial)
    assert await migrate.current_revision(engine) is None
    await create_schema(engine)
    assert await migrate.current_revision(engine) == migrate.head_revision()
    assert await migrate.schema_diff(engine) == []


async def test_revision_writes_a_migration_from_the_models(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, copy)
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", copy)
    previous = migrate.head_revision()
    await migrate.new_revision(engine, "nothing changed", rev_id="9999")
    (written,) = (copy / "versions").glob("9999_*.py")
    text = written.read_text()
    assert f"Revises: {previous}" in text
    assert "op." not in text  # the models match head: nothing to do
    assert migrate.head_revision() == "9999"


def test_db_commands(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "current", "--database-url", db_url]) == 0
    assert capsys.readouterr().out.strip() == "(empty database)"
    assert main(["db", "upgrade", "--database-url", db_url]) == 0
    assert capsys.readouterr().out.strip() == f"at revision {migrate.head_revision()}"
    assert main(["db", "check", "--database-url", db_url]) == 0
    assert "matches the models" in capsys.readouterr().out
