"""The volunteer API's contract: each status code of the upload table, with the database
and blob store unchanged after every refusal."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import pytest
import torch

from tests.work_server.api.conftest import (
    Client,
    bearer,
    db_snapshot,
    fetch_unit,
    make_result,
    register,
    start_digits_job,
)
from tests.work_server.api.conftest import (
    expect as _expect,
)
from work_server.config import ServerConfig


async def test_register_and_bad_bodies(client: Client) -> None:
    host_id, token = await register(client)
    assert host_id >= 1
    assert len(token) >= 32
    r = await client.post(
        "/api/v1/hosts", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    await _expect(r, 400, "invalid_json")
    r = await client.post("/api/v1/hosts", json={"name": "x", "runtimes": ["teleport"]})
    await _expect(r, 422, "invalid_body")
    r = await client.post("/api/v1/hosts", json={"name": "x", "surprise": 1})
    await _expect(r, 422, "invalid_body")


async def test_tokens_are_required(client: Client, config: ServerConfig) -> None:
    await start_digits_job(client)
    _, token = await register(client)
    unit = await fetch_unit(client, token)
    before = db_snapshot(config)
    body = make_result(unit.weights)
    for headers in ({}, bearer("not-a-token"), {"Authorization": "Basic abc"}):
        await _expect(await client.post("/api/v1/work", json={}, headers=headers), 401)
        await _expect(await client.put(unit.upload_url, data=body, headers=headers), 401)
        await _expect(await client.post("/api/v1/hosts/heartbeat", json={}, headers=headers), 401)
        await _expect(await client.get(unit.raw["inputs"][0]["url"], headers=headers), 401)
        await _expect(
            await client.post("/api/v1/jobs", json={"dataset": "digits"}, headers=headers), 401
        )
    assert db_snapshot(config) == before


async def test_work_unit_shape_and_blob_download(client: Client) -> None:
    job_id = await start_digits_job(client, shards=2)
    _, token = await register(client)
    r = await client.post("/api/v1/work", json={"max_units": 4}, headers=bearer(token))
    body = await _expect(r, 200)
    units = body["units"]
    assert len(units) == 2  # one per shard; replicas of a work unit never go to one host
    u = units[0]
    assert u["job_id"] == job_id
    assert u["round"] == 1
    assert u["runtime"] == "process"
    assert {i["name"] for i in u["inputs"]} == {"shard", "weights"}
    assert u["task"]["model"] == "lenet"
    assert u["upload"]["max_bytes"] > 0
    # the upload grant has a field of its own: no credential in the URL
    assert u["upload"]["url"] == f"/api/v1/results/{u['result_id']}"
    assert u["upload"]["grant"].count(".") == 1
    shard = next(i for i in u["inputs"] if i["name"] == "shard")
    full = await client.get(shard["url"], headers=bearer(token))
    data = await full.read()
    assert full.status == 200
    assert len(data) == shard["size"]
    assert full.headers["ETag"] == f'"{shard["sha256"]}"'
    part = await client.get(shard["url"], headers={**bearer(token), "Range": "bytes=0-7"})
    assert part.status == 206
    assert await part.read() == data[:8]
    again = await client.get(
        shard["url"], headers={**bearer(token), "If-None-Match": f'"{shard["sha256"]}"'}
    )
    assert again.status == 304
    await _expect(
        await client.get("/api/v1/blobs/..%2F..%2Fetc%2Fpasswd", headers=bearer(token)), 400
    )
    await _expect(await client.get("/api/v1/blobs/" + "0" * 64, headers=bearer(token)), 404)
    # no more work: told when to come back
    body = await _expect(await client.post("/api/v1/work", json={}, headers=bearer(token)), 200)
    assert body["units"] == []
    assert body["retry_after_s"] > 0


async def test_upload_accepted_and_idempotent(client: Client, config: ServerConfig) -> None:
    await start_digits_job(client)
    _, token = await register(client)
    unit = await fetch_unit(client, token)
    good = make_result(unit.weights)
    body = await _expect(
        await client.put(unit.upload_url, data=good, headers=unit.upload_headers(token)), 200
    )
    assert body["duplicate"] is False
    after_first = db_snapshot(config)
    body = await _expect(
        await client.put(unit.upload_url, data=good, headers=unit.upload_headers(token)), 200
    )
    assert body["duplicate"] is True
    assert db_snapshot(config) == after_first  # counted once
    other = make_result(unit.weights, change=lambda t: next(iter(t.values())).add_(1.0))
    await _expect(
        await client.put(unit.upload_url, data=other, headers=unit.upload_headers(token)),
        409,
        "different_reupload",
    )
    assert db_snapshot(config) == after_first


def _bad_bodies(weights: bytes) -> dict[str, bytes]:
    good = make_result(weights)
    (n,) = struct.unpack("<Q", good[:8])
    return {
        "empty": b"",
        "not safetensors": b"PK\x03\x04 this is a zip file, or a pickle, or anything",
        "truncated header": good[: 8 + n // 2],
        "truncated data": good[:-100],
        "huge header length": struct.pack("<Q", 2**40) + good[8:],
        "trailing garbage": good + b"\x00" * 16,
        "wrong shape": make_result(
            weights, change=lambda t: t.__setitem__("fc2.bias", torch.zeros(11))
        ),
        "wrong dtype": make_result(
            weights, change=lambda t: t.__setitem__("fc2.bias", t["fc2.bias"].double())
        ),
        "extra tensor": make_result(
            weights, change=lambda t: t.__setitem__("backdoor", torch.zeros(3))
        ),
        "missing tensor": make_result(weights, change=lambda t: t.pop("fc2.bias")),
        "nan weights": make_result(
            weights, change=lambda t: t["conv1.weight"].view(-1)[0].fill_(float("nan"))
        ),
        "inf weights": make_result(weights, change=lambda t: t["fc1.bias"].fill_(float("inf"))),
        "bad report": make_result(weights, report={"train_loss": "low"}),
    }


async def test_invalid_uploads_are_refused_and_change_nothing(
    client: Client, config: ServerConfig
) -> None:
    await start_digits_job(client)
    _, token = await register(client)
    unit = await fetch_unit(client, token)
    before = db_snapshot(config)
    for name, data in _bad_bodies(unit.weights).items():
        r = await client.put(unit.upload_url, data=data, headers=unit.upload_headers(token))
        body = await _expect(r, 422)
        assert body["error"] == "invalid_result", (name, body)
        assert db_snapshot(config) == before, f"{name} changed the database"
    # and the unit can still be completed properly afterwards
    await _expect(
        await client.put(
            unit.upload_url, data=make_result(unit.weights), headers=unit.upload_headers(token)
        ),
        200,
    )


async def test_oversized_upload_refused_before_reading(
    client: Client, config: ServerConfig
) -> None:
    await start_digits_job(client)
    _, token = await register(client)
    unit = await fetch_unit(client, token)
    before = db_snapshot(config)
    huge = b"\x00" * (unit.max_bytes + 1)
    await _expect(
        await client.put(unit.upload_url, data=huge, headers=unit.upload_headers(token)), 413
    )

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: refused while streaming
        for _ in range(unit.max_bytes // 65536 + 2):
            yield b"\x00" * 65536

    await _expect(
        await client.put(unit.upload_url, data=chunks(), headers=unit.upload_headers(token)), 413
    )
    assert db_snapshot(config) == before


async def test_someone_elses_and_unknown_results(client: Client, config: ServerConfig) -> None:
    await start_digits_job(client)
    _, token = await register(client, "owner")
    _, intruder = await register(client, "intruder")
    unit = await fetch_unit(client, token)
    before = db_snapshot(config)
    good = make_result(unit.weights)
    # the upload grant names the owner's host: refused before the body
    await _expect(
        await client.put(unit.upload_url, data=good, headers=unit.upload_headers(intruder)),
        403,
        "foreign_upload_grant",
    )
    await _expect(
        await client.put(f"/api/v1/results/{unit.result_id}", data=good, headers=bearer(intruder)),
        403,
        "invalid_upload_grant",
    )
    await _expect(
        await client.post(
            f"/api/v1/results/{unit.result_id}/failure",
            json={"reason": "crash"},
            headers=bearer(intruder),
        ),
        403,
    )
    await _expect(
        await client.put("/api/v1/results/999999", data=good, headers=bearer(token)),
        403,
        "invalid_upload_grant",
    )
    await _expect(await client.put("/api/v1/results/abc", data=good, headers=bearer(token)), 400)
    assert db_snapshot(config) == before


async def test_no_longer_wanted_is_gone(client: Client, config: ServerConfig) -> None:
    job_id = await start_digits_job(client)
    _, token = await register(client)
    unit = await fetch_unit(client, token)
    from work_server import keys
    from work_server.daemons import round_closer, transitioner

    app = client.app
    assert app is not None
    r = await client.post(
        f"/api/v1/jobs/{job_id}/cancel", headers={"Authorization": "Bearer operator-secret-token"}
    )
    assert r.status == 200
    import time

    async with app[keys.SESSIONMAKER]() as session:
        now = time.time()
        # the round closer cancels the round's work, the transitioner retires its results
        await round_closer.run_once(session, now, blobs=app[keys.BLOBS], runs_dir=config.runs_dir)
        await transitioner.run_once(session, now)
    hb = await _expect(
        await client.post(
            "/api/v1/hosts/heartbeat",
            json={"running": [{"result_id": unit.result_id}]},
            headers=bearer(token),
        ),
        200,
    )
    assert hb["abort"] == [unit.result_id]
    before = db_snapshot(config)
    await _expect(
        await client.put(
            unit.upload_url, data=make_result(unit.weights), headers=unit.upload_headers(token)
        ),
        410,
        "result_not_wanted",
    )
    assert db_snapshot(config) == before


async def test_failure_report(client: Client) -> None:
    await start_digits_job(client)
    _, token = await register(client)
    unit = await fetch_unit(client, token)
    url = f"/api/v1/results/{unit.result_id}/failure"
    await _expect(await client.post(url, json={"reason": "martians"}, headers=bearer(token)), 422)
    r = await client.post(
        url, json={"reason": "crash", "detail": "segfault"}, headers=bearer(token)
    )
    assert r.status == 200
    assert (await r.json())["recorded"] is True
    r = await client.post(url, json={"reason": "crash"}, headers=bearer(token))
    assert r.status == 200
    assert (await r.json())["recorded"] is False
    await _expect(
        await client.put(
            unit.upload_url, data=make_result(unit.weights), headers=unit.upload_headers(token)
        ),
        410,
    )


@pytest.mark.parametrize("path", ["/api/v1/openapi.json", "/healthz", "/metrics", "/api/v1/status"])
async def test_public_endpoints(client: Client, path: str) -> None:
    r = await client.get(path)
    assert r.status == 200
    if path.endswith("openapi.json"):
        doc = await r.json()
        assert doc["openapi"].startswith("3.")
        assert "/api/v1/results/{result_id}" in doc["paths"]
        put = doc["paths"]["/api/v1/results/{result_id}"]["put"]
        assert {"200", "403", "409", "410", "413", "422"} <= set(put["responses"])
