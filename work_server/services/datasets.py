"""Datasets an operator uploads from the web pages: validate, store, record.

Parsing an upload (unzipping, checking every array), encoding the canonical blob and writing
it to the blob store are CPU and disk work on up to ``max_request_bytes`` of data; they run in
a worker thread (``asyncio.to_thread``) so the event loop keeps answering volunteers and
other pages meanwhile. Only the few database rows are written on the loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import IO

from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.blobs import BlobStorage
from work_server.db.models import UploadedDataset
from work_server.db.upsert import ensure_blob_row, insert_ignore
from work_server.errors import Unprocessable
from work_server.ml.uploaded import DatasetLimits, InvalidDataset, encode_dataset, parse_upload


@dataclass(frozen=True)
class StoredDataset:
    """What was stored: the blob's sha256 (``JobSpec.dataset_sha256``) and the sample counts."""

    sha256: str
    name: str
    size: int
    num_train: int
    num_test: int


def _parse_and_put(
    source: IO[bytes], filename: str, limits: DatasetLimits, blobs: BlobStorage
) -> tuple[str, int, int, int]:
    """Blocking part (runs in a thread): read at most one byte over the limit, so that an
    oversized file is refused without reading all of it; parse; encode; write the blob."""
    data = source.read(limits.max_bytes + 1)
    try:
        dataset = parse_upload(filename, data, limits)
    except InvalidDataset as exc:
        raise Unprocessable(str(exc), code="invalid_dataset") from None
    blob = encode_dataset(dataset)
    sha = blobs.put(blob)
    return sha, len(blob), len(dataset.train_labels), len(dataset.test_labels)


async def store_uploaded_dataset(
    session: AsyncSession,
    source: IO[bytes],
    *,
    filename: str,
    name: str,
    blobs: BlobStorage,
    limits: DatasetLimits,
    now: float,
) -> StoredDataset:
    """Validate the upload read from ``source``, store it as a content-addressed blob and
    record it (a ``Blob`` row the file deleter keeps while the ``UploadedDataset`` row
    exists). Uploading the same data again keeps the first row and its name.

    Raises ``Unprocessable`` (code ``invalid_dataset``, the reason as detail) for a file
    that is not an acceptable dataset; nothing is stored then."""
    sha, size, num_train, num_test = await asyncio.to_thread(
        _parse_and_put, source, filename, limits, blobs
    )
    await ensure_blob_row(session, sha, size, "dataset", now)
    # Two server processes may store the same upload at once: the database settles it.
    await insert_ignore(
        session,
        UploadedDataset,
        sha256=sha,
        name=name,
        size=size,
        num_train=num_train,
        num_test=num_test,
        created_at=now,
    )
    await session.commit()
    return StoredDataset(sha256=sha, name=name, size=size, num_train=num_train, num_test=num_test)
