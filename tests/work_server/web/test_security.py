"""Security of the web pages: sessions, CSRF, cookie flags, the login delay, headers."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from sqlmodel import select

from tests.work_server.web.conftest import (
    PASSWORD,
    USER,
    Client,
    Sleeps,
    csrf_of,
    fast_auth,
    login,
    page_csrf,
)
from work_server import keys
from work_server.app import create_app
from work_server.config import ServerConfig
from work_server.db.models import Host, Job, WebSession
from work_server.web.auth import WEB_AUTH, LoginThrottle, create_operator

OPERATOR_PAGES = [
    "/dashboard",
    "/jobs",
    "/jobs/1",
    "/hosts",
    "/jobs/1/model",
    "/jobs/1/report/report.json",
]
FRAGMENTS = ["/dashboard/live", "/jobs/1/live"]
FORMS = [
    "/logout",
    "/jobs",
    "/jobs/1/cancel",
    "/hosts/1/ban",
    "/hosts/1/unban",
    "/datasets",
]


async def add_host(client: Client) -> int:
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        host = Host(
            name="h1",
            os="linux",
            arch="x86_64",
            cpus=2,
            memory_mb=2048,
            runtimes=["process"],
            token_hash="0" * 64,
            created_at=time.time(),
            last_contact=time.time(),
        )
        session.add(host)
        await session.commit()
        assert host.id is not None
        return host.id


@pytest.mark.parametrize("path", OPERATOR_PAGES)
async def test_operator_pages_redirect_to_login_without_a_session(
    client: Client, path: str
) -> None:
    r = await client.get(path, allow_redirects=False)
    assert r.status == 303
    assert r.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("path", FRAGMENTS)
async def test_live_fragments_answer_401_without_a_session(client: Client, path: str) -> None:
    r = await client.get(path, allow_redirects=False)
    assert r.status == 401


@pytest.mark.parametrize("path", FORMS)
async def test_forms_answer_401_without_a_session(client: Client, path: str) -> None:
    host_id = await add_host(client)
    r = await client.post(
        path, data={"csrf_token": "x", "dataset": "digits"}, allow_redirects=False
    )
    assert r.status == 401
    assert "Login required" in await r.text()
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        assert (await session.exec(select(Job))).all() == []
        host = await session.get(Host, host_id)
        assert host is not None
        assert not host.banned


async def test_a_bad_session_cookie_is_no_session(client: Client) -> None:
    client.session.cookie_jar.update_cookies({"yadml_session": "x" * 43})
    r = await client.get("/dashboard", allow_redirects=False)
    assert r.status == 303


async def test_public_pages_need_no_session(client: Client) -> None:
    for path in ("/server-status", "/server-status/live", "/login", "/static/style.css"):
        r = await client.get(path)
        assert r.status == 200, path
    r = await client.get("/", allow_redirects=False)
    assert r.headers["Location"] == "/server-status"


@pytest.mark.parametrize("path", FORMS)
@pytest.mark.parametrize("token", [None, "", "wrong-token"])
async def test_forms_without_the_csrf_token_are_refused(
    logged_in: Client, path: str, token: str | None
) -> None:
    client = logged_in
    host_id = await add_host(client)
    data: dict[str, Any] = {"dataset": "digits", "shards": "2", "rounds": "2"}
    if token is not None:
        data["csrf_token"] = token
    r = await client.post(path.replace("/1/", f"/{host_id}/"), data=data, allow_redirects=False)
    assert r.status == 403
    assert "security token" in await r.text()
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        assert (await session.exec(select(Job))).all() == []
        host = await session.get(Host, host_id)
        assert host is not None
        assert not host.banned
        assert len((await session.exec(select(WebSession))).all()) == 1  # still logged in


async def test_the_csrf_token_is_per_session(client: Client) -> None:
    await login(client)
    first = await page_csrf(client)
    r = await client.post("/logout", data={"csrf_token": first}, allow_redirects=False)
    assert r.status == 303
    await login(client)
    second = await page_csrf(client)
    assert first != second
    r = await client.post("/hosts/1/ban", data={"csrf_token": first}, allow_redirects=False)
    assert r.status == 403


async def test_login_form_needs_its_csrf_cookie(client: Client) -> None:
    page = await client.get("/login")
    token = csrf_of(await page.text())
    client.session.cookie_jar.clear()
    r = await client.post(
        "/login",
        data={"csrf_token": token, "username": USER, "password": PASSWORD},
        allow_redirects=False,
    )
    assert r.status == 403
    assert "yadml_session" not in r.cookies


def _set_cookie_headers(r: Any, name: str) -> list[str]:
    return [h for h in r.headers.getall("Set-Cookie", []) if h.startswith(f"{name}=")]


async def test_session_cookie_flags(client: Client) -> None:
    page = await client.get("/login")
    [login_cookie] = _set_cookie_headers(page, "yadml_login_csrf")
    assert "HttpOnly" in login_cookie
    assert "SameSite=Strict" in login_cookie
    r = await login(client)
    assert r.status == 303
    [cookie] = _set_cookie_headers(r, "yadml_session")
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")}
    assert "httponly" in flags
    assert flags["samesite"].lower() == "samesite=strict"
    assert flags["path"] == "Path=/"
    assert "secure" not in flags  # plain http on loopback: see ServerConfig.cookie_secure


async def test_session_cookie_is_secure_when_configured(
    aiohttp_client: Any, config: ServerConfig, sleeps: Sleeps
) -> None:
    app = create_app(replace(config, cookie_secure=True))
    app[WEB_AUTH] = fast_auth(sleeps)
    client: Client = await aiohttp_client(app)
    async with app[keys.SESSIONMAKER]() as session:
        await create_operator(
            session, USER, PASSWORD, passwords=app[WEB_AUTH].passwords, now=time.time()
        )
    page = await client.get("/login")
    [login_cookie] = _set_cookie_headers(page, "yadml_login_csrf")
    assert "Secure" in login_cookie
    token = csrf_of(await page.text())
    # the client keeps Secure cookies for https only: send it back by hand
    r = await client.post(
        "/login",
        data={"csrf_token": token, "username": USER, "password": PASSWORD},
        headers={"Cookie": f"yadml_login_csrf={token}"},
        allow_redirects=False,
    )
    assert r.status == 303
    [cookie] = _set_cookie_headers(r, "yadml_session")
    assert "Secure" in cookie
    assert "HttpOnly" in cookie


async def test_wrong_password_is_slowed_down(client: Client, sleeps: Sleeps) -> None:
    r = await login(client, password="not the password")
    assert r.status == 401
    assert "Wrong user name or password" in await r.text()
    assert "yadml_session" not in r.cookies
    assert sleeps.delays == [1.0]
    # the next failure doubles the delay, and is itself held back before checking
    await login(client, password="still wrong")
    assert sleeps.delays == [1.0, 1.0, 2.0]
    await login(client, password="wrong again")
    assert sleeps.delays[-2:] == [2.0, 4.0]
    # even the right password now waits for the owed delay first
    r = await login(client)
    assert r.status == 303
    assert sleeps.delays[-1] == 4.0
    # and a success clears the user's record (the address keeps its own)
    throttle = client.app[WEB_AUTH].throttle if client.app is not None else None
    assert throttle is not None
    assert throttle.delay_for([f"user:{USER}"]) == 0


async def test_unknown_user_is_slowed_down_the_same(client: Client, sleeps: Sleeps) -> None:
    r = await login(client, user="mallory", password="whatever1234")
    assert r.status == 401
    assert sleeps.delays == [1.0]


def test_throttle_caps_and_forgets() -> None:
    now = [1000.0]
    t = LoginThrottle(base_delay_s=1, max_delay_s=8, window_s=60, clock=lambda: now[0])
    delays = [t.failed(["user:a"]) for _ in range(6)]
    assert delays == [1, 2, 4, 8, 8, 8]
    assert t.delay_for(["user:b"]) == 0
    assert t.delay_for(["user:b", "user:a"]) == 8
    now[0] += 61
    assert t.delay_for(["user:a"]) == 0


async def test_logout_ends_the_session(logged_in: Client) -> None:
    client = logged_in
    token = await page_csrf(client)
    r = await client.post("/logout", data={"csrf_token": token}, allow_redirects=False)
    assert r.status == 303
    assert r.headers["Location"].startswith("/login")
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        assert (await session.exec(select(WebSession))).all() == []
    r = await client.get("/dashboard", allow_redirects=False)
    assert r.status == 303


async def test_stolen_cookie_is_useless_after_logout(logged_in: Client) -> None:
    client = logged_in
    cookie = next(c for c in client.session.cookie_jar if c.key == "yadml_session").value
    token = await page_csrf(client)
    await client.post("/logout", data={"csrf_token": token}, allow_redirects=False)
    client.session.cookie_jar.update_cookies({"yadml_session": cookie})
    r = await client.get("/dashboard", allow_redirects=False)
    assert r.status == 303


async def test_expired_session_is_no_session(logged_in: Client) -> None:
    client = logged_in
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        for row in (await session.exec(select(WebSession))).all():
            row.expires_at = time.time() - 1
            session.add(row)
        await session.commit()
    r = await client.get("/dashboard", allow_redirects=False)
    assert r.status == 303


async def test_session_token_is_stored_hashed(logged_in: Client) -> None:
    client = logged_in
    cookie = next(c for c in client.session.cookie_jar if c.key == "yadml_session").value
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        [row] = (await session.exec(select(WebSession))).all()
    assert row.token_hash != cookie
    assert len(row.token_hash) == 64


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil"])
async def test_login_never_redirects_off_site(client: Client, target: str) -> None:
    page = await client.get("/login")
    token = csrf_of(await page.text())
    r = await client.post(
        "/login",
        data={"csrf_token": token, "username": USER, "password": PASSWORD, "next": target},
        allow_redirects=False,
    )
    assert r.status == 303
    assert r.headers["Location"] == "/dashboard"


async def test_pages_send_security_headers(logged_in: Client) -> None:
    r = await logged_in.get("/dashboard")
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Cache-Control"] == "no-store"


async def test_every_html_answer_has_the_headers_and_json_keeps_its_own(client: Client) -> None:
    public = await client.get("/server-status")
    assert "frame-ancestors 'none'" in public.headers["Content-Security-Policy"]
    assert "Cache-Control" not in public.headers  # nothing private on it
    refused = await client.get("/dashboard/live")  # a fragment without a session: HTML 401
    assert refused.status == 401
    assert refused.content_type == "text/html"
    assert refused.headers["X-Frame-Options"] == "DENY"
    api = await client.get("/api/v1/status")
    assert api.content_type == "application/json"
    assert "Content-Security-Policy" not in api.headers


async def test_api_bearer_token_still_works_and_session_is_not_a_token(logged_in: Client) -> None:
    client = logged_in
    r = await client.get("/api/v1/jobs")
    assert r.status == 401  # a web session is not the API's bearer token
    r = await client.get("/api/v1/jobs", headers={"Authorization": "Bearer api-token-for-tests"})
    assert r.status == 200
