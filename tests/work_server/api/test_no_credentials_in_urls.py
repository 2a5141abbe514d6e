"""Credentials travel in headers, never in URLs (issue 19).

- no URL the server emits carries a credential: every GET route of the real app is
  crawled (API as anonymous, host and operator; HTML pages anonymous and logged in),
  plus the work reply, the upload answer and the form redirects, and every URL in their
  bodies and ``Location`` headers is checked;
- a credential-like query parameter (``?grant=``, ``?token=``, ...) is refused with 400
  and a reason before any handler runs, even when it is valid;
- the upload grant is accepted from the ``X-Upload-Grant`` header only.
"""

from __future__ import annotations

import html
import re
import time
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from tests.work_server.api.conftest import (
    OPERATOR,
    Client,
    bearer,
    db_snapshot,
    expect,
    fetch_unit,
    make_result,
    op_headers,
    register,
    start_digits_job,
)
from tests.work_server.web.conftest import PASSWORD, USER, Sleeps, csrf_of, fast_auth
from work_server import keys
from work_server.app import create_app
from work_server.config import ServerConfig
from work_server.url_credentials import credential_params
from work_server.web.auth import WEB_AUTH, create_operator

#: ``?name=`` / ``&name=`` anywhere in a text: the query parameters of every URL in it
QUERY_PARAM = re.compile(r"[?&]([A-Za-z0-9_.\-]+)=")
#: what a route's ``{...}`` parts are filled with, beyond the ids made in the test
REPORT = "report.json"


def _views(text: str) -> list[str]:
    """``text`` as written, HTML-unescaped and percent-decoded (twice, for nested URLs)."""
    return [text, html.unescape(text), unquote(unquote(html.unescape(text)))]


def credential_leaks(text: str, secrets: set[str]) -> list[str]:
    """Credential-like query parameters in ``text``'s URLs, and secrets inside a URL."""
    found: list[str] = []
    for view in _views(text):
        found += credential_params(QUERY_PARAM.findall(view))
        for secret in secrets:
            # a secret right after a URL's ``/``, ``?``, ``&`` or ``=`` is in that URL
            if re.search(rf"[/?&=][^\s\"'<>]*{re.escape(secret)}", view):
                found.append(f"{secret[:8]}... in a URL")
    return sorted(set(found))


def test_the_scanner_finds_what_it_looks_for() -> None:
    assert credential_leaks('<a href="/x?a=1&amp;access_token=s">', set()) == ["access_token"]
    assert credential_leaks("/login?next=%2Fjobs%3Fgrant%3Dabc", set()) == ["grant"]
    assert credential_leaks('{"url": "/api/v1/results/1/sekrit"}', {"sekrit"})
    assert credential_leaks('{"url": "/api/v1/results/1", "grant": "sekrit"}', {"sekrit"}) == []
    assert credential_leaks("/login?next=/jobs&message=hi", {"sekrit"}) == []


async def _app_client(aiohttp_client: Any, config: ServerConfig) -> Client:
    app = create_app(config)
    app[WEB_AUTH] = fast_auth(Sleeps())
    client: Client = await aiohttp_client(app)
    async with app[keys.SESSIONMAKER]() as session:
        await create_operator(
            session, USER, PASSWORD, passwords=app[WEB_AUTH].passwords, now=time.time()
        )
    return client


def _get_routes(app: web.Application, ids: dict[str, str]) -> list[str]:
    """Every GET route of the app with its ``{...}`` filled in from ``ids`` (``1`` for a
    part it does not name: a route added later is crawled too)."""
    paths = []
    for resource in app.router.resources():
        if isinstance(resource, web.StaticResource):
            continue
        if not any(route.method == "GET" for route in resource):
            continue
        paths.append(re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), "1"), resource.canonical))
    return sorted(set(paths))


async def _answer(r: Any) -> str:
    """The parts of an answer a URL may hide in: ``Location`` and a text body."""
    parts = [r.headers.get("Location", ""), r.headers.get("Content-Location", "")]
    ctype = r.headers.get("Content-Type", "")
    if ctype.startswith(("text/", "application/json", "image/svg")):
        parts.append(await r.text())
    return "\n".join(parts)


async def test_no_url_the_server_emits_carries_a_credential(
    aiohttp_client: Any, config: ServerConfig
) -> None:
    client = await _app_client(aiohttp_client, config)
    assert client.app is not None
    job_id = await start_digits_job(client, shards=4)
    host_id, token = await register(client, "crawler")
    work = await client.post("/api/v1/work", json={"max_units": 2}, headers=bearer(token))
    answers = [await _answer(work)]
    units = (await work.json())["units"]
    assert units, "the crawl needs a work reply with units"
    grants = {u["upload"]["grant"] for u in units}
    for u in units:
        assert "?" not in u["upload"]["url"]
        for inp in u["inputs"]:
            assert "?" not in inp["url"]
    unit = await fetch_unit(client, (await register(client, "uploader"))[1])
    grants.add(unit.grant)
    uploaded = await client.put(
        unit.upload_url,
        data=make_result(unit.weights),
        headers=unit.upload_headers((await register(client, "intruder"))[1]),
    )
    answers.append(await _answer(uploaded))  # refused (foreign grant): its reason, too
    secrets = {OPERATOR, token, *grants}
    ids = {
        "job_id": str(job_id),
        "host_id": str(host_id),
        "result_id": str(unit.result_id),
        "sha256": units[0]["inputs"][0]["sha256"],
        "name": REPORT,
    }
    routes = _get_routes(client.app, ids)
    assert "/api/v1/openapi.json" in routes
    assert f"/jobs/{job_id}" in routes
    crawled: list[str] = []
    for headers in ({}, bearer(token), op_headers()):
        for path in routes:
            r = await client.get(path, headers=headers, allow_redirects=False)
            answers.append(await _answer(r))
            crawled.append(path)
    # the guard's redirect keeps the page's own query: harmless names only
    r = await client.get(f"/jobs/{job_id}?message=hello", allow_redirects=False)
    assert r.status == 303
    assert r.headers["Location"].startswith("/login?next=")
    answers.append(await _answer(r))
    # logged in: every page again, and the forms' redirects
    page = await client.get("/login")
    login = await client.post(
        "/login",
        data={
            "csrf_token": csrf_of(await page.text()),
            "username": USER,
            "password": PASSWORD,
            "next": f"/jobs/{job_id}",
        },
        allow_redirects=False,
    )
    assert login.status == 303
    answers.append(await _answer(login))
    for path in routes:
        answers.append(await _answer(await client.get(path, allow_redirects=False)))
    csrf = csrf_of(await (await client.get("/dashboard")).text())
    for form in (f"/hosts/{host_id}/ban", f"/hosts/{host_id}/unban", "/logout"):
        r = await client.post(form, data={"csrf_token": csrf}, allow_redirects=False)
        assert r.status == 303, (form, await r.text())
        answers.append(await _answer(r))
    text = "\n".join(answers)
    # the scanner saw the redirects
    assert "/login?next=" in text
    assert "/hosts?message=" in text
    assert credential_leaks(text, secrets) == []


async def test_credentials_in_a_url_are_refused_before_any_handler(
    client: Client, config: ServerConfig
) -> None:
    await start_digits_job(client)
    _, token = await register(client)
    unit = await fetch_unit(client, token)
    before = db_snapshot(config)
    job = {"dataset": "digits", "shards": 2, "rounds": 1}
    blob = unit.raw["inputs"][0]["url"]
    refused: list[tuple[str, str, dict[str, str], Any]] = [
        ("PUT", f"{unit.upload_url}?grant={unit.grant}", unit.upload_headers(token), None),
        ("PUT", f"{unit.upload_url}?X-Upload-Grant={unit.grant}", bearer(token), None),
        ("POST", f"/api/v1/jobs?token={OPERATOR}", op_headers(), job),  # valid, all the same
        ("GET", f"/api/v1/jobs?access_token={OPERATOR}", {}, None),
        ("GET", f"{blob}?Token={token}", bearer(token), None),
        ("POST", f"/api/v1/work?api_key={token}", bearer(token), {}),
        ("GET", "/dashboard?session=abc", {}, None),
        ("GET", "/nowhere?password=abc", {}, None),
    ]
    for method, url, headers, body in refused:
        r = await client.request(method, url, headers=headers, json=body)
        answer = await expect(r, 400, "credential_in_url")
        assert "never accepted in a URL" in answer["detail"], answer
        assert db_snapshot(config) == before, url  # no handler ran
    grant_answer = await expect(
        await client.put(f"{unit.upload_url}?grant={unit.grant}", data=b"x", headers=bearer(token)),
        400,
    )
    assert "X-Upload-Grant" in grant_answer["detail"]
    # without the header the upload is refused and told where the grant goes
    missing = await expect(
        await client.put(unit.upload_url, data=make_result(unit.weights), headers=bearer(token)),
        403,
        "invalid_upload_grant",
    )
    assert "X-Upload-Grant" in missing["detail"]
    # the server's own query parameters still work
    assert (await client.get("/login?next=/jobs")).status == 200
    assert (await client.get("/server-status?message=hi")).status == 200
    ok = await client.put(
        unit.upload_url, data=make_result(unit.weights), headers=unit.upload_headers(token)
    )
    await expect(ok, 200)


def test_what_counts_as_a_credential_parameter() -> None:
    assert credential_params(["next", "message", "logged_out", "max_units"]) == []
    assert credential_params(
        ["grant", "token", "access_token", "X-Upload-Grant", "API_KEY", "sessionid", "auth"]
    ) == ["API_KEY", "X-Upload-Grant", "access_token", "auth", "grant", "sessionid", "token"]
