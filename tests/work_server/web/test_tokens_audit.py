"""The tokens page (the logged-in operator's own API tokens) and the audit log page, on the
real app with real SQLite: shown once, usable on the API, revocable, CSRF-protected, and
every web action in the audit log with the web operator's name and session."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from sqlmodel import select

from tests.work_server.ml.test_uploaded import images_labels, npz
from tests.work_server.web.conftest import USER, Client, login, page_csrf
from tests.work_server.web.test_pages import JOB_FORM
from tests.work_server.web.test_security import add_host
from tests.work_server.web.test_uploads import upload
from work_server import keys
from work_server.db.models import ApiToken, AuditEvent, WebSession
from work_server.services import api_tokens
from work_server.services.principal import Principal
from work_server.web.auth import WEB_AUTH, create_operator

TOKEN_RE = re.compile(r'<code id="new-token-value">(yadml_pat_[A-Za-z0-9_-]+)</code>')


async def make_web_token(client: Client, **form: Any) -> str:
    csrf = await page_csrf(client, "/tokens")
    data = {"csrf_token": csrf, "scopes": "read", "expires_in": "30d", **form}
    r = await client.post("/tokens", data=data, allow_redirects=False)
    assert r.status == 200, await r.text()
    assert r.headers["Cache-Control"] == "no-store"
    m = TOKEN_RE.search(await r.text())
    assert m, "the new token is on the answer"
    return m.group(1)


async def events(client: Client) -> list[AuditEvent]:
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        rows = await session.exec(select(AuditEvent).order_by(AuditEvent.id))  # type: ignore[arg-type]
        return list(rows.all())


async def test_make_use_and_revoke_a_token_from_the_page(logged_in: Client) -> None:
    client = logged_in
    token = await make_web_token(client, note="laptop")
    api = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/v1/jobs", headers=api)).status == 200
    r = await client.post("/api/v1/jobs", json={"dataset": "digits"}, headers=api)
    assert r.status == 403  # read only

    page = await (await client.get("/tokens")).text()
    assert token not in page  # shown once
    assert "laptop" in page
    (token_id,) = re.findall(r'action="/tokens/(\d+)/revoke"', page)
    csrf = await page_csrf(client, "/tokens")
    r = await client.post(
        f"/tokens/{token_id}/revoke", data={"csrf_token": csrf}, allow_redirects=False
    )
    assert r.status == 303
    assert (await client.get("/api/v1/jobs", headers=api)).status == 401
    assert "revoked" in await (await client.get("/tokens")).text()

    got = [(e.action, e.operator, e.via) for e in await events(client)]
    assert got == [
        ("login.success", USER, "web"),
        ("token.create", USER, "web"),
        ("token.revoke", USER, "web"),
    ]
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        (session_row,) = (await session.exec(select(WebSession))).all()
    assert {e.session_tag for e in await events(client)} == {session_row.token_hash[:12]}
    assert {e.client_ip for e in await events(client)} == {"127.0.0.1"}


@pytest.mark.parametrize(
    ("form", "reason"),
    [
        ({"scopes": "root"}, "unknown scope"),
        ({"scopes": ""}, "at least one scope"),
        ({"expires_in": "forever"}, "not a duration"),
        ({"expires_in": "0d"}, "expires between"),
        ({"expires_in": "99999d"}, "expires between"),
        ({"note": "x" * 300}, "at most 200"),
    ],
)
async def test_bad_token_forms_are_explained(
    logged_in: Client, form: dict[str, str], reason: str
) -> None:
    client = logged_in
    csrf = await page_csrf(client, "/tokens")
    data = {"csrf_token": csrf, "scopes": "read", "expires_in": "30d", **form}
    r = await client.post("/tokens", data=data)
    assert r.status == 422
    assert reason in await r.text()
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        assert (await session.exec(select(ApiToken))).all() == []


async def test_another_operators_token_is_not_found(logged_in: Client) -> None:
    client = logged_in
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        await create_operator(
            session,
            "bob",
            "bobs long password",
            passwords=client.app[WEB_AUTH].passwords,
            now=time.time(),
        )
        _, bobs = await api_tokens.create_token(
            session,
            operator="bob",
            scopes=["admin"],
            expires_in_s=None,
            note="bob's",
            actor=Principal.cli("root"),
            client_ip=None,
            now=time.time(),
        )
    assert "bob&#39;s" not in await (await client.get("/tokens")).text()  # not listed
    csrf = await page_csrf(client, "/tokens")
    for token_id in (bobs.token.id, 999):
        r = await client.post(f"/tokens/{token_id}/revoke", data={"csrf_token": csrf})
        assert r.status == 404
    async with client.app[keys.SESSIONMAKER]() as session:
        row = await session.get(ApiToken, bobs.token.id)
        assert row is not None
        assert row.revoked_at is None


@pytest.mark.parametrize("path", ["/tokens", "/tokens/1/revoke"])
async def test_token_forms_need_a_session_and_its_csrf_token(client: Client, path: str) -> None:
    r = await client.post(path, data={"csrf_token": "x", "scopes": "admin"}, allow_redirects=False)
    assert r.status == 401
    await login(client)
    r = await client.post(path, data={"csrf_token": "x", "scopes": "admin"}, allow_redirects=False)
    assert r.status == 403
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        assert (await session.exec(select(ApiToken))).all() == []


@pytest.mark.parametrize("path", ["/tokens", "/audit"])
async def test_pages_redirect_to_login_without_a_session(client: Client, path: str) -> None:
    r = await client.get(path, allow_redirects=False)
    assert r.status == 303
    assert r.headers["Location"].startswith("/login?next=")


async def test_web_actions_and_logins_are_on_the_audit_page(logged_in: Client) -> None:
    client = logged_in
    host_id = await add_host(client)
    csrf = await page_csrf(client)
    for verb in ("ban", "unban"):
        r = await client.post(
            f"/hosts/{host_id}/{verb}", data={"csrf_token": csrf}, allow_redirects=False
        )
        assert r.status == 303
    r = await client.post("/jobs", data={"csrf_token": csrf, **JOB_FORM}, allow_redirects=False)
    assert r.status == 303
    job_id = r.headers["Location"].rsplit("/", 1)[1]
    r = await client.post(
        f"/jobs/{job_id}/cancel", data={"csrf_token": csrf}, allow_redirects=False
    )
    assert r.status == 303
    await client.post("/logout", data={"csrf_token": csrf})
    r = await login(client, password="wrong password!")
    assert r.status == 401
    await login(client)

    got = [(e.action, e.target, e.operator) for e in await events(client)]
    assert got == [
        ("login.success", f"operator:{USER}", USER),
        ("host.ban", f"host:{host_id}", USER),
        ("host.unban", f"host:{host_id}", USER),
        ("job.start", f"job:{job_id}", USER),
        ("job.cancel", f"job:{job_id}", USER),
        ("login.failure", f"operator:{USER}", USER),
        ("login.success", f"operator:{USER}", USER),
    ]
    page = await client.get("/audit")
    assert page.status == 200
    html = await page.text()
    rows = re.findall(r'<tr id="event-(\d+)">', html)
    assert [int(i) for i in rows] == sorted((e.id or 0 for e in await events(client)), reverse=True)
    assert "host.ban" in html
    assert "job.start" in html
    assert "login.failure" in html


async def test_the_audit_page_pages(logged_in: Client) -> None:
    client = logged_in
    host_id = await add_host(client)
    csrf = await page_csrf(client)
    for _ in range(60):
        await client.post(f"/hosts/{host_id}/ban", data={"csrf_token": csrf}, allow_redirects=False)
    first = await (await client.get("/audit")).text()
    assert len(re.findall(r'<tr id="event-', first)) == 50
    older = re.search(r'href="/audit\?before=(\d+)" id="older"', first)
    assert older
    second = await (await client.get(f"/audit?before={older.group(1)}")).text()
    assert len(re.findall(r'<tr id="event-', second)) == 11  # 60 bans and the login
    assert 'id="older"' not in second
    for bad in ("x", "-1", "9" * 19):
        assert (await client.get(f"/audit?before={bad}")).status == 400


async def test_a_dataset_upload_is_audited_and_a_refused_one_is_not(logged_in: Client) -> None:
    client = logged_in
    images, labels = images_labels(200)
    assert (await upload(client, "bad.npz", b"not a zip")).status == 422
    r = await upload(client, "mine.npz", npz(images=images, labels=labels), name="mine")
    assert r.status == 303
    (event,) = [e for e in await events(client) if e.action == "dataset.upload"]
    assert event.operator == USER
    assert event.target.startswith("dataset:")
    assert event.detail == {"name": "mine", "train": 160, "test": 40}
