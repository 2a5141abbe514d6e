"""The storage contract's fixture: the same tests on SQLite and on a real PostgreSQL server
(``make postgres``; a fresh database per test). ``sim`` is the daemons' test driver
(``tests/work_server/daemons/conftest.py``) on that backend, schema made by the migrations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.pg import fresh_database, require_postgres
from tests.work_server.daemons.conftest import Sim
from work_server.blobs import BlobStore
from work_server.db.engine import create_schema, make_engine, make_sessionmaker

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a new database on the test PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}"
        return
    with fresh_database(require_postgres()) as url:
        yield url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(db_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def store(engine: AsyncEngine, tmp_path: Path) -> Sim:
    """Migrated schema, a blob directory, and the daemons' driver on ``engine``."""
    await create_schema(engine)
    return Sim(sm=make_sessionmaker(engine), blobs=BlobStore(tmp_path / "blobs"), runs_dir=tmp_path)
