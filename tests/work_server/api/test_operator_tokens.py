"""Operators' personal API tokens and the audit log, against the real app on loopback with
real SQLite: scopes on every operator endpoint, expiry and revocation, hashing at rest, and
an audit event (who, what, when, from where) for every action a token was allowed."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from datetime import datetime
from typing import Any

import pytest
from sqlmodel import select

from tests.work_server.api.access_helpers import (
    PROXY_CLIENT,
    add_operator,
    audit_events,
    auth,
    make_token,
)
from tests.work_server.api.conftest import (
    Client,
    expect,
    op_headers,
    register,
    start_digits_job,
)
from work_server import keys
from work_server.app import create_app
from work_server.auth import hash_token
from work_server.config import ServerConfig
from work_server.db.models import ApiToken, Blob, Host, Job, JobState


@pytest.fixture
def config(config: ServerConfig) -> ServerConfig:
    # loopback is the reverse proxy here: the audit log must show the forwarded address
    return dataclasses.replace(config, trusted_proxies=frozenset({"127.0.0.1"}))


# --------------------------------------------------------------------------- scopes


async def test_a_read_token_reads_but_cannot_start_cancel_ban_or_unban(client: Client) -> None:
    await add_operator(client)
    job_id = await start_digits_job(client)
    host_id, _ = await register(client)
    read = (await make_token(client, ["read"]))["token"]

    for path in (
        "/api/v1/jobs",
        f"/api/v1/jobs/{job_id}",
        "/api/v1/status",
        "/api/v1/audit",
        "/api/v1/hosts",
        f"/api/v1/hosts/{host_id}",
    ):
        await expect(await client.get(path, headers=auth(read)), 200)

    before = await audit_events(client, read)
    refused = [
        ("/api/v1/jobs", {"dataset": "digits", "shards": 2}, "jobs"),
        (f"/api/v1/jobs/{job_id}/cancel", None, "jobs"),
        (f"/api/v1/hosts/{host_id}/ban", None, "hosts"),
        (f"/api/v1/hosts/{host_id}/unban", None, "hosts"),
        ("/api/v1/tokens", {"operator": "alice", "scopes": ["admin"]}, "admin"),
    ]
    for path, body, needed in refused:
        r = await client.post(path, json=body, headers=auth(read))
        err = await expect(r, 403, "insufficient_scope")
        assert f"'{needed}'" in err["detail"], err
    await expect(await client.get("/api/v1/tokens", headers=auth(read)), 403, "insufficient_scope")
    await expect(
        await client.delete("/api/v1/tokens/1", headers=auth(read)), 403, "insufficient_scope"
    )

    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        jobs = await session.get(Job, job_id)
        host = await session.get(Host, host_id)
        assert jobs is not None
        assert jobs.state == JobState.running
        assert host is not None
        assert not host.banned
        assert len((await session.exec(select(ApiToken))).all()) == 1
    assert await audit_events(client, read) == before  # refusals change nothing


async def test_scopes_grant_only_their_own_actions(client: Client) -> None:
    await add_operator(client)
    host_id, _ = await register(client)
    jobs = (await make_token(client, ["jobs"]))["token"]
    hosts = (await make_token(client, ["hosts"]))["token"]
    # a jobs token starts jobs, but reading needs 'read'; a hosts token cannot start one
    await expect(
        await client.post("/api/v1/jobs", json={"dataset": "digits"}, headers=auth(jobs)), 201
    )
    await expect(await client.get("/api/v1/jobs", headers=auth(jobs)), 403, "insufficient_scope")
    await expect(
        await client.post("/api/v1/jobs", json={"dataset": "digits"}, headers=auth(hosts)),
        403,
        "insufficient_scope",
    )
    await expect(await client.post(f"/api/v1/hosts/{host_id}/ban", headers=auth(jobs)), 403)
    await expect(await client.post(f"/api/v1/hosts/{host_id}/ban", headers=auth(hosts)), 200)


# --------------------------------------------------------------------------- audit


async def test_every_allowed_action_is_in_the_audit_log(client: Client) -> None:
    await add_operator(client)
    await add_operator(client, "bob")
    host_id, _ = await register(client)
    t0 = time.time()
    jobs = await make_token(client, ["read", "jobs"])
    hosts = await make_token(client, ["hosts"], operator="bob", note="ban bot")

    r = await client.post("/api/v1/jobs", json={"dataset": "digits"}, headers=auth(jobs["token"]))
    job_id = (await expect(r, 201))["id"]
    r = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=auth(jobs["token"]))
    await expect(r, 200)
    await expect(
        await client.post(f"/api/v1/hosts/{host_id}/ban", headers=auth(hosts["token"])), 200
    )
    r = await client.post(f"/api/v1/hosts/{host_id}/unban", headers=auth(hosts["token"]))
    await expect(r, 200)
    r = await client.delete(f"/api/v1/tokens/{hosts['id']}", headers=op_headers())
    assert (await expect(r, 200))["state"] == "revoked"

    events = await audit_events(client, jobs["token"])
    got = [(e["action"], e["target"], e["operator"], e["token_id"]) for e in events]
    assert got == [
        ("token.revoke", f"token:{hosts['id']}", "operator", None),
        ("host.unban", f"host:{host_id}", "bob", hosts["id"]),
        ("host.ban", f"host:{host_id}", "bob", hosts["id"]),
        ("job.cancel", f"job:{job_id}", "alice", jobs["id"]),
        ("job.start", f"job:{job_id}", "alice", jobs["id"]),
        ("token.create", f"token:{hosts['id']}", "operator", None),
        ("token.create", f"token:{jobs['id']}", "operator", None),
    ]
    for e in events:
        assert e["via"] == "api"
        assert t0 - 1 <= _ts(e["at"]) <= time.time() + 1
    by_action = {e["action"]: e for e in events}  # the oldest of each action
    # from where: the trusted proxy's X-Forwarded-For, else the peer itself
    assert by_action["job.start"]["client_ip"] == PROXY_CLIENT
    assert by_action["host.ban"]["client_ip"] == PROXY_CLIENT
    assert by_action["token.revoke"]["client_ip"] == "127.0.0.1"
    assert by_action["job.start"]["detail"]["dataset"] == "digits"
    assert by_action["token.create"]["detail"]["scopes"] == ["jobs", "read"]
    assert events[-2]["detail"]["owner"] == "bob"


async def test_refused_actions_are_not_recorded(client: Client) -> None:
    await add_operator(client)
    admin = (await make_token(client, ["admin"]))["token"]
    await expect(await client.post("/api/v1/jobs/99/cancel", headers=auth(admin)), 404)
    await expect(await client.post("/api/v1/hosts/99/ban", headers=auth(admin)), 404)
    assert [e["action"] for e in await audit_events(client, admin)] == ["token.create"]


async def test_the_audit_log_pages_newest_first(client: Client) -> None:
    await add_operator(client)
    host_id, _ = await register(client)
    for _ in range(5):
        await expect(await client.post(f"/api/v1/hosts/{host_id}/ban", headers=op_headers()), 200)
    r = await client.get("/api/v1/audit", params={"limit": 2}, headers=op_headers())
    first = await expect(r, 200)
    ids = [e["id"] for e in first["events"]]
    assert ids == sorted(ids, reverse=True)
    assert len(ids) == 2
    seen = list(ids)
    before = first["next_before"]
    while before is not None:
        r = await client.get(
            "/api/v1/audit", params={"limit": 2, "before": before}, headers=op_headers()
        )
        page = await expect(r, 200)
        seen += [e["id"] for e in page["events"]]
        before = page["next_before"]
    assert seen == sorted(seen, reverse=True)
    assert len(seen) == 5


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# --------------------------------------------------------------------------- lifetime


async def test_expired_revoked_and_unknown_tokens_get_401(client: Client) -> None:
    await add_operator(client)
    made = await make_token(client, ["read"], expires_in_s=3600)
    token = made["token"]
    await expect(await client.get("/api/v1/jobs", headers=auth(token)), 200)

    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        row = await session.get(ApiToken, made["id"])
        assert row is not None
        assert row.last_used_at is not None
        row.expires_at = time.time() - 1
        session.add(row)
        await session.commit()
    await expect(await client.get("/api/v1/jobs", headers=auth(token)), 401, "token_expired")

    other = (await make_token(client, ["read"]))["token"]
    await expect(await client.get("/api/v1/jobs", headers=auth(other)), 200)
    listed = await expect(await client.get("/api/v1/tokens", headers=op_headers()), 200)
    other_id = next(t["id"] for t in listed["tokens"] if t["id"] != made["id"])
    assert {t["state"] for t in listed["tokens"]} == {"active", "expired"}
    await expect(await client.delete(f"/api/v1/tokens/{other_id}", headers=op_headers()), 200)
    await expect(await client.get("/api/v1/jobs", headers=auth(other)), 401, "token_revoked")
    # revoking again changes nothing
    again = await expect(
        await client.delete(f"/api/v1/tokens/{other_id}", headers=op_headers()), 200
    )
    assert again["state"] == "revoked"

    for bogus in ("yadml_pat_" + "A" * 43, "not-a-token", token + "x"):
        await expect(await client.get("/api/v1/jobs", headers=auth(bogus)), 401)
    await expect(await client.get("/api/v1/jobs"), 401)


async def test_tokens_are_stored_hashed(client: Client, config: ServerConfig) -> None:
    await add_operator(client)
    made = await make_token(client, ["admin"], note="nightly")
    token = made["token"]
    assert token.startswith("yadml_pat_")
    assert len(token) >= 50
    # it works, and shows up nowhere afterwards: not in the listing, not in the database
    await expect(await client.get("/api/v1/audit", headers=auth(token)), 200)
    listed = await (await client.get("/api/v1/tokens", headers=op_headers())).text()
    assert token not in listed
    assert "token_hash" not in listed
    con = sqlite3.connect(config.state_dir / "yadml.db")
    try:
        (stored,) = con.execute("SELECT token_hash FROM apitoken").fetchone()
        dump = "\n".join(con.iterdump())
    finally:
        con.close()
    assert stored == hash_token(token)
    assert token not in dump
    assert token.removeprefix("yadml_pat_") not in dump
    for path in config.state_dir.glob("yadml.db*"):
        assert token.encode() not in path.read_bytes()


async def test_the_bootstrap_token_is_an_admin_of_its_own(
    aiohttp_client: Any, config: ServerConfig
) -> None:
    # an operator named like the built-in identity does not inherit the bootstrap token
    client: Client = await aiohttp_client(create_app(config))
    await add_operator(client, "operator")
    made = await make_token(client, ["read"], operator="operator")
    r = await client.post("/api/v1/jobs", json={"dataset": "digits"}, headers=auth(made["token"]))
    await expect(r, 403, "insufficient_scope")
    r = await client.post("/api/v1/jobs", json={"dataset": "digits"}, headers=op_headers())
    await expect(r, 201)


async def test_personal_tokens_download_blobs_with_the_read_scope(client: Client) -> None:
    await add_operator(client)
    await start_digits_job(client)
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        blob = (await session.exec(select(Blob))).first()
    assert blob is not None
    url = f"/api/v1/blobs/{blob.sha256}"
    read = await make_token(client, ["read"])
    jobs = (await make_token(client, ["jobs"]))["token"]
    r = await client.get(url, headers=auth(read["token"]))
    assert r.status == 200
    assert len(await r.read()) == blob.size
    await expect(await client.get(url, headers=auth(jobs)), 403, "insufficient_scope")
    await expect(await client.delete(f"/api/v1/tokens/{read['id']}", headers=op_headers()), 200)
    await expect(await client.get(url, headers=auth(read["token"])), 401, "token_revoked")
    assert (await client.get(url, headers=op_headers())).status == 200  # the bootstrap token
