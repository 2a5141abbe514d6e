"""The uploaded-dataset store: rows and blob for a good file, nothing for a refused one,
the first name kept for the same data, and the heavy work done off the event loop."""

from __future__ import annotations

import io
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.blobs import BlobStore
from work_server.db.engine import create_schema, make_engine, make_sessionmaker, sqlite_url
from work_server.db.models import Blob, UploadedDataset
from work_server.errors import Unprocessable
from work_server.ml import uploaded
from work_server.ml.uploaded import DatasetLimits
from work_server.services import datasets as dataset_service

NOW = 1_000_000.0
LIMITS = DatasetLimits(max_bytes=1 << 20)


def npz(n: int = 100) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(
        buf, images=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), labels=np.arange(n) % 10
    )
    return buf.getvalue()


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(sqlite_url(tmp_path))
    await create_schema(engine)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def store(
    sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, data: bytes, name: str
) -> dataset_service.StoredDataset:
    async with sessions() as session:
        return await dataset_service.store_uploaded_dataset(
            session,
            io.BytesIO(data),
            filename="d.npz",
            name=name,
            blobs=blobs,
            limits=LIMITS,
            now=NOW,
        )


async def test_stores_blob_and_rows_and_keeps_the_first_name(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    stored = await store(sessions, blobs, npz(), "first")
    assert (stored.name, stored.num_train, stored.num_test) == ("first", 80, 20)
    assert blobs.exists(stored.sha256)
    assert blobs.size(stored.sha256) == stored.size
    again = await store(sessions, blobs, npz(), "second")
    assert again.sha256 == stored.sha256
    async with sessions() as session:
        [row] = (await session.exec(select(UploadedDataset))).all()
        [blob] = (await session.exec(select(Blob))).all()
    assert row.name == "first"
    assert row.num_train == 80
    assert row.created_at == NOW
    assert (blob.sha256, blob.kind, blob.size) == (stored.sha256, "dataset", stored.size)


async def test_refused_file_is_unprocessable_and_stores_nothing(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    with pytest.raises(Unprocessable, match=r"not a valid \.npz") as info:
        await store(sessions, blobs, b"PK\x03\x04 not a zip", "bad")
    assert info.value.code == "invalid_dataset"
    with pytest.raises(Unprocessable, match="limit"):
        await store(sessions, blobs, b"x" * (LIMITS.max_bytes + 10), "big")
    assert blobs.list() == []
    async with sessions() as session:
        assert (await session.exec(select(UploadedDataset))).all() == []


async def test_parsing_and_blob_write_run_off_the_event_loop(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    seen: dict[str, int] = {}

    def spy(name: str, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            seen[name] = threading.get_ident()
            return fn(*args, **kwargs)

        return wrapped

    class SpyBlobs(BlobStore):
        def put(self, data: bytes) -> str:
            seen["put"] = threading.get_ident()
            return super().put(data)

    service = "work_server.services.datasets"
    monkeypatch.setattr(f"{service}.parse_upload", spy("parse", uploaded.parse_upload))
    monkeypatch.setattr(f"{service}.encode_dataset", spy("encode", uploaded.encode_dataset))
    await store(sessions, SpyBlobs(tmp_path / "blobs"), npz(), "mine")
    assert set(seen) == {"parse", "encode", "put"}
    assert loop_thread not in seen.values()
