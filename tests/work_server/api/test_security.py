"""Hostile input against the real app: signed work, upload grants, body limits, path
traversal, SQL-looking strings, rate limits and bans. Every refusal has the right status
and a clear message, and leaves the database and blob store unchanged."""

from __future__ import annotations

import asyncio
import dataclasses
import stat
from typing import Any

import pytest

from tests.work_server.api.conftest import (
    OPERATOR,
    Client,
    bearer,
    db_snapshot,
    fetch_unit,
    make_result,
    op_headers,
    register,
    start_digits_job,
)
from tests.work_server.api.conftest import (
    expect as _expect,
)
from work_server.app import create_app
from work_server.config import ServerConfig
from work_server.ratelimit import Rate
from work_server.signing import KEY_FILE, UploadGrant, UploadGrants, rotate_key
from yadml_common.signing import WorkVerifier
from yadml_common.wire import ProjectInfo, WorkResponse


async def _app(aiohttp_client: Any, config: ServerConfig, **changes: Any) -> Client:
    c: Client = await aiohttp_client(create_app(dataclasses.replace(config, **changes)))
    return c


async def _raw_request(client: Client, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send ``head`` (request line + headers) and ``body``, then read the status line:
    proves the server answered without waiting for the (announced, never sent) rest."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
        rest = await asyncio.wait_for(reader.read(65536), timeout=10)
    finally:
        writer.close()
    return int(status_line.split()[1]), rest


# --------------------------------------------------------------------------- signed work


async def test_work_units_are_signed_by_the_published_key(
    client: Client, config: ServerConfig
) -> None:
    await start_digits_job(client)
    _, token = await register(client)
    info = ProjectInfo.model_validate(await (await client.get("/api/v1/project")).json())
    current = [k for k in info.public_keys if k.current]
    assert len(current) == 1
    assert current[0].fingerprint == info.fingerprint
    verifier = WorkVerifier.from_b64([current[0].public_key])
    r = await client.post("/api/v1/work", json={"max_units": 2}, headers=bearer(token))
    units = WorkResponse.model_validate(await r.json()).units
    assert len(units) == 2
    for unit in units:
        verifier.verify(unit)  # raises if not
    key_file = config.state_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((config.state_dir / "upload_grant_key").stat().st_mode) == 0o600


async def test_key_rotation_publishes_an_endorsed_key(
    aiohttp_client: Any, client: Client, config: ServerConfig
) -> None:
    old = ProjectInfo.model_validate(await (await client.get("/api/v1/project")).json())
    old_fp, new_fp = rotate_key(config.state_dir, grace_days=7)
    assert old_fp == old.fingerprint
    assert new_fp != old_fp
    restarted = await _app(aiohttp_client, config)
    info = ProjectInfo.model_validate(await (await restarted.get("/api/v1/project")).json())
    assert info.fingerprint == new_fp
    assert {k.fingerprint for k in info.public_keys} == {old_fp, new_fp}
    verifier = WorkVerifier.from_b64([old.public_keys[0].public_key])  # a client pinned old
    new_entry = next(k for k in info.public_keys if k.current)
    assert verifier.learn(new_entry)
    assert verifier.knows(new_fp)
    tampered = new_entry.model_copy(update={"public_key": old.public_keys[0].public_key})
    assert WorkVerifier.from_b64([new_entry.public_key]).learn(tampered) is False
    _, third_fp = rotate_key(config.state_dir, grace_days=0)  # new_fp retires at once
    third = await _app(aiohttp_client, config)
    info = ProjectInfo.model_validate(await (await third.get("/api/v1/project")).json())
    assert {k.fingerprint for k in info.public_keys} == {old_fp, third_fp}  # old: 7 days


# --------------------------------------------------------------------------- upload grants


async def test_uploads_outside_their_grant_are_refused(
    client: Client, config: ServerConfig
) -> None:
    await start_digits_job(client)
    host_id, token = await register(client)
    unit = await fetch_unit(client, token)
    other = await fetch_unit(client, token)
    good = make_result(unit.weights)
    base = f"/api/v1/results/{unit.result_id}"
    grant = unit.grant
    before = db_snapshot(config)
    grants = UploadGrants.load_or_create(config.state_dir)
    expired = grants.issue(UploadGrant(unit.result_id, host_id, unit.max_bytes, expires=1.0))
    forged = UploadGrants(b"x" * 32).issue(
        UploadGrant(unit.result_id, host_id, unit.max_bytes, expires=4e9)
    )
    bigger = grants.issue(UploadGrant(unit.result_id, host_id, 10, expires=4e9))
    cases: list[tuple[str | None, int, str]] = [
        (None, 403, "invalid_upload_grant"),
        ("", 403, "invalid_upload_grant"),
        ("garbage", 403, "invalid_upload_grant"),
        (forged, 403, "invalid_upload_grant"),
        (f"{grant[:-3]}AAA", 403, "invalid_upload_grant"),
        (other.grant, 403, "foreign_upload_grant"),
        (expired, 410, "upload_grant_expired"),
        (bigger, 413, "payload_too_large"),
    ]
    for sent, status, error in cases:
        headers = bearer(token) if sent is None else {**bearer(token), "X-Upload-Grant": sent}
        await _expect(await client.put(base, data=good, headers=headers), status, error)
        assert db_snapshot(config) == before, sent
    # the right grant in the URL is refused all the same: credentials never go in a URL
    for url in (f"{base}?grant={grant}", f"{base}?token={token}"):
        body = await _expect(
            await client.put(url, data=good, headers=unit.upload_headers(token)),
            400,
            "credential_in_url",
        )
        assert "never accepted in a URL" in body["detail"]
        assert db_snapshot(config) == before, url
    r = await client.put(base, data=good, headers=unit.upload_headers(token))
    await _expect(r, 200)


async def test_oversized_bodies_are_refused_without_reading_them(
    client: Client, config: ServerConfig
) -> None:
    await start_digits_job(client)
    _, token = await register(client)
    unit = await fetch_unit(client, token)
    before = db_snapshot(config)
    gib = 1 << 30
    for method, path in (
        ("PUT", unit.upload_url),
        ("POST", "/api/v1/hosts"),
        ("POST", "/api/v1/work"),
        ("POST", "/api/v1/jobs"),
    ):
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            f"{_token_for(token, path)}\r\nX-Upload-Grant: {unit.grant}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {gib}\r\n"
        )
        status, rest = await _raw_request(client, head, b"\x00" * 1024)  # 1 KiB of 1 GiB
        assert status == 413, (path, rest)
        assert b"exceeds" in rest
    assert db_snapshot(config) == before


def _token_for(token: str, path: str) -> str:
    return OPERATOR if path.endswith("/jobs") else token


# --------------------------------------------------------------------------- hostile strings


async def test_path_traversal_and_sql_looking_input(client: Client, config: ServerConfig) -> None:
    job_id = await start_digits_job(client)
    sql = "x'; DROP TABLE host; --"
    host_id, token = await register(client, sql)  # stored as data, never as SQL
    before = db_snapshot(config)
    assert any(sql in row for row in before["host"])
    h, op = bearer(token), op_headers()
    for path, status in (
        ("/api/v1/blobs/..%2F..%2Fetc%2Fpasswd", 400),
        ("/api/v1/blobs/" + "A" * 64, 400),  # uppercase is not a blob name
        ("/api/v1/blobs/' OR '1'='1", 400),
        ("/api/v1/blobs/" + "0" * 63 + "%00", 400),
    ):
        await _expect(await client.get(path, headers=h), status, "bad_blob_name")
    for path in (
        f"/api/v1/jobs/{job_id}/report/..%2F..%2Fvar%2Fyadml.db",
        f"/api/v1/jobs/{job_id}/report/%2Fetc%2Fpasswd",
        f"/api/v1/jobs/{job_id}/report/report.json%00.png",
    ):
        await _expect(await client.get(path, headers=op), 404)
    for path in ("/api/v1/jobs/1 OR 1=1", "/api/v1/jobs/1;DROP TABLE job", "/api/v1/jobs/-1"):
        await _expect(await client.get(path, headers=op), 400)
    await _expect(
        await client.post(
            "/api/v1/results/1' OR '1'='1/failure", json={"reason": "crash"}, headers=h
        ),
        400,
    )
    await _expect(
        await client.post("/api/v1/jobs", json={"dataset": "mnist' --"}, headers=op),
        422,
        "invalid_body",
    )
    await _expect(await client.post("/api/v1/work", json={}, headers=bearer("' OR 1=1 --")), 401)
    assert db_snapshot(config) == before
    assert host_id >= 1


# --------------------------------------------------------------------------- abuse


async def test_rate_limits(aiohttp_client: Any, config: ServerConfig) -> None:
    client = await _app(
        aiohttp_client,
        config,
        rate_register_per_ip=Rate(0.01, 2),
        rate_work_per_host=Rate(0.01, 1),
        rate_work_per_ip=Rate(0.01, 3),
    )
    _, token = await register(client, "a")
    _, token2 = await register(client, "b")
    before = db_snapshot(config)
    r = await client.post("/api/v1/hosts", json={"name": "c"})
    body = await _expect(r, 429, "rate_limited")
    assert int(r.headers["Retry-After"]) >= 1
    assert "registration" in body["detail"]
    assert db_snapshot(config) == before
    await _expect(await client.post("/api/v1/work", json={}, headers=bearer(token)), 200)
    after_first = db_snapshot(config)
    r = await client.post("/api/v1/work", json={}, headers=bearer(token))  # per host
    await _expect(r, 429, "rate_limited")
    assert int(r.headers["Retry-After"]) >= 1
    assert db_snapshot(config) == after_first  # not even last_contact
    await _expect(await client.post("/api/v1/work", json={}, headers=bearer(token2)), 200)
    r = await client.post("/api/v1/work", json={}, headers=bearer(token2))  # per IP now
    await _expect(r, 429, "rate_limited")


async def test_banned_host_gets_403_everywhere_but_heartbeats(
    client: Client, config: ServerConfig
) -> None:
    await start_digits_job(client)
    host_id, token = await register(client)
    unit = await fetch_unit(client, token)
    blob_url = unit.raw["inputs"][0]["url"]
    await _expect(await client.post(f"/api/v1/hosts/{host_id}/ban", headers=bearer(token)), 401)
    await _expect(await client.post("/api/v1/hosts/99999/ban", headers=op_headers()), 404)
    body = await _expect(
        await client.post(f"/api/v1/hosts/{host_id}/ban", headers=op_headers()), 200
    )
    assert body == {"host_id": host_id, "banned": True}
    before = db_snapshot(config)
    h = bearer(token)
    for resp in (
        await client.post("/api/v1/work", json={}, headers=h),
        await client.get(blob_url, headers=h),
        await client.put(unit.upload_url, data=make_result(unit.weights), headers=h),
        await client.post(
            f"/api/v1/results/{unit.result_id}/failure", json={"reason": "crash"}, headers=h
        ),
    ):
        await _expect(resp, 403, "host_banned")
    # the one answer a banned host gets: abort what it runs (tests/work_server/api/test_ban.py)
    running = {"running": [{"result_id": unit.result_id, "fraction_done": 0.5}]}
    r = await client.post("/api/v1/hosts/heartbeat", json=running, headers=h)
    assert (await _expect(r, 200))["abort"] == [unit.result_id]
    assert db_snapshot(config) == before
    await _expect(await client.post(f"/api/v1/hosts/{host_id}/unban", headers=op_headers()), 200)
    await _expect(await client.post("/api/v1/hosts/heartbeat", json={}, headers=h), 200)


@pytest.mark.parametrize("peer_trusted", [True, False])
async def test_forwarded_for_only_from_trusted_proxies(
    aiohttp_client: Any, config: ServerConfig, peer_trusted: bool
) -> None:
    trusted = frozenset({"127.0.0.1"}) if peer_trusted else frozenset()
    client = await _app(
        aiohttp_client, config, rate_register_per_ip=Rate(0.01, 1), trusted_proxies=trusted
    )
    for ip in ("203.0.113.1", "203.0.113.2"):
        r = await client.post("/api/v1/hosts", json={"name": ip}, headers={"X-Forwarded-For": ip})
        # behind a trusted proxy each client IP has its own bucket; otherwise the header
        # is ignored and both requests share the peer's bucket
        assert r.status == (201 if peer_trusted or ip.endswith(".1") else 429)


async def test_ids_beyond_64_bits_are_refused_not_crashing(client: Client) -> None:
    """Found by schemathesis: a heartbeat with result_id >= 2**63 overflowed SQLite (500)."""
    _, token = await register(client)
    body = {"running": [{"result_id": 2**64}]}
    r = await client.post("/api/v1/hosts/heartbeat", json=body, headers=bearer(token))
    await _expect(r, 422, "invalid_body")
    await _expect(await client.get("/api/v1/jobs/" + "9" * 19, headers=op_headers()), 400)
