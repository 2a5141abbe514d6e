"""Uploading a dataset from the jobs page: storage as a content-addressed blob, a refused
file that stores nothing, and a job that trains from an uploaded dataset."""

from __future__ import annotations

import time
from typing import Any

from sqlmodel import select

from tests.work_server.ml.test_uploaded import images_labels, npz, pickled_npz
from tests.work_server.web.conftest import Client, page_csrf
from work_server import job_info, keys
from work_server.daemons.work_generator import start_job
from work_server.db.models import Blob, Job, UploadedDataset


async def upload(client: Client, filename: str, data: bytes, name: str = "my digits") -> Any:
    token = await page_csrf(client, "/jobs")
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("csrf_token", token)
    form.add_field("name", name)
    form.add_field("file", data, filename=filename, content_type="application/octet-stream")
    return await client.post("/datasets", data=form, allow_redirects=False)


async def test_upload_and_train_from_it(logged_in: Client) -> None:
    client = logged_in
    images, labels = images_labels(200)
    r = await upload(client, "mine.npz", npz(images=images, labels=labels))
    assert r.status == 303, await r.text()
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        [ds] = (await session.exec(select(UploadedDataset))).all()
        blob = await session.get(Blob, ds.sha256)
    assert ds.name == "my digits"
    assert ds.num_train == 160
    assert ds.num_test == 40
    assert blob is not None
    assert client.app[keys.BLOBS].exists(ds.sha256)
    page = await (await client.get("/jobs")).text()
    assert f'value="upload:{ds.sha256}"' in page
    token = await page_csrf(client, "/jobs")
    r = await client.post(
        "/jobs",
        data={
            "csrf_token": token,
            "dataset": f"upload:{ds.sha256}",
            "shards": "2",
            "rounds": "1",
            "runtimes": "process",
        },
        allow_redirects=False,
    )
    assert r.status == 303, await r.text()
    async with client.app[keys.SESSIONMAKER]() as session:
        [job] = (await session.exec(select(Job))).all()
        assert job.spec["dataset"] == "upload"
        assert job.spec["dataset_sha256"] == ds.sha256
        await start_job(
            session, job, time.time(), blobs=client.app[keys.BLOBS], data_dir=None, fashion_dir=None
        )
        await session.commit()
        await session.refresh(job)
    assert job.state == "running"
    info = job_info.load(job)
    assert info.num_train_samples == 160
    assert info.num_test_samples == 40


async def test_refused_upload_stores_nothing(logged_in: Client) -> None:
    client = logged_in
    r = await upload(client, "bad.npz", pickled_npz())
    assert r.status == 422
    html = await r.text()
    assert 'id="upload-error"' in html
    assert "bad.npz was refused" in html
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        assert (await session.exec(select(UploadedDataset))).all() == []
        assert (await session.exec(select(Blob))).all() == []
    assert client.app[keys.BLOBS].list() == []


async def test_api_refuses_an_unknown_uploaded_dataset(logged_in: Client) -> None:
    r = await logged_in.post(
        "/api/v1/jobs",
        json={"dataset": "upload", "dataset_sha256": "a" * 64},
        headers={"Authorization": "Bearer api-token-for-tests"},
    )
    assert r.status == 422
    assert (await r.json())["error"] == "unknown_dataset"
    r = await logged_in.post(
        "/api/v1/jobs",
        json={"dataset": "upload"},
        headers={"Authorization": "Bearer api-token-for-tests"},
    )
    assert r.status == 422
