"""Migrations beyond the contract: databases made before migrations existed, the developer's
``db revision``, and the ``yadml-server db`` commands (on both backends via ``db_url``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from work_server.cli import main
from work_server.db import migrate
from work_server.db.engine import create_schema


async def test_a_database_made_by_create_all_is_stamped_then_upgraded(engine: AsyncEngine) -> None:
    # what create_all made before migrations: the initial revision's schema (today's models
    # have columns the initial tables lacked, so they cannot stand in for it), unstamped
    await migrate.upgrade(engine, migrate.INITIAL_REVISION)
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE alembic_version"))
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
