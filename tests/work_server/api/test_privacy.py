"""Volunteers are anonymous to everyone but the operators and themselves.

A host registered as ``privacy-canary-<random>`` (through the API and through a real
``yadml-client attach``) does some work; then every route of the app is called without
credentials and with another volunteer's token, and the canary must appear in no answer,
body or header, API or HTML, page or error. The operator's ``GET /api/v1/hosts`` and the host's
own ``GET /api/v1/hosts/me`` do show it.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from aiohttp import web
from sqlmodel import select

from tests.work_server.api.conftest import (
    Client,
    bearer,
    expect,
    fetch_unit,
    op_headers,
    register,
    start_digits_job,
)
from work_server import keys
from work_server.db.models import Host
from yadml_common.wire import ServerStatus


def every_route(app: web.Application, params: dict[str, str]) -> Iterator[tuple[str, str]]:
    """(method, path) of every route, path parameters filled from ``params``; a parameter the
    test does not know fails it, so a new route cannot slip past unchecked."""
    for resource in app.router.resources():
        info = resource.get_info()
        if "directory" in info:  # static files
            for name in sorted(p.name for p in Path(info["directory"]).iterdir()):
                yield "GET", f"{info['prefix']}/{name}"
            continue
        path = info.get("path") or info["formatter"]
        for name in re.findall(r"{(\w+)}", path):
            assert name in params, f"{path}: no test value for {{{name}}}"
            path = path.replace(f"{{{name}}}", params[name])
        for route in resource:
            yield route.method, path


async def attach_with_the_real_client(url: str, state_dir: Path, *name: str) -> str:
    """``yadml-client attach URL [--name NAME]`` in a subprocess; returns its output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "volunteer_client",
        "--state-dir",
        str(state_dir),
        "attach",
        url,
        *name,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def _names(client: Client) -> list[str]:
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        return list((await session.exec(select(Host.name))).all())


async def test_a_host_name_is_in_no_anonymous_answer(client: Client, tmp_path: Path) -> None:
    canary = f"privacy-canary-{secrets.token_hex(8)}"
    host_id, token = await register(client, canary)
    _, bystander = await register(client, "bystander")
    url = str(client.make_url("")).rstrip("/")
    await attach_with_the_real_client(url, tmp_path / "named", "--name", f"{canary}-cli")

    # traffic: a job, a work request, a blob download, a heartbeat
    job_id = await start_digits_job(client)
    unit = await fetch_unit(client, token)
    running = {"running": [{"result_id": unit.result_id, "fraction_done": 0.5}]}
    r = await client.post("/api/v1/hosts/heartbeat", json=running, headers=bearer(token))
    await expect(r, 200)
    weights = next(i for i in unit.raw["inputs"] if i["name"] == "weights")

    assert client.app is not None
    params = {
        "host_id": str(host_id),
        "job_id": str(job_id),
        "result_id": str(unit.result_id),
        "sha256": weights["sha256"],
        "name": "report.json",
        "token_id": "1",
    }
    routes = sorted(set(every_route(client.app, params)))
    routes += [("GET", "/no/such/page"), ("GET", "/api/v1/no-such-call"), ("DELETE", "/")]
    assert ("GET", "/server-status/live") in routes
    seen: dict[tuple[str, str], int] = {}
    for who, headers in (("anonymous", {}), ("another volunteer", bearer(bystander))):
        for method, path in routes:
            resp = await client.request(method, path, headers=headers, allow_redirects=False)
            body = await resp.text(errors="replace")
            where = f"{method} {path} ({who}): HTTP {resp.status}"
            assert canary not in body, where
            assert not any(canary in v for v in resp.headers.values()), where
            seen[(method, path)] = resp.status
    assert all(code < 500 for code in seen.values()), seen
    # the same probe does find the name where it belongs: the operators' answers
    found = [
        path
        for method, path in routes
        if method == "GET"
        and canary in await (await client.get(path, headers=op_headers())).text(errors="replace")
    ]
    assert found == ["/api/v1/hosts", f"/api/v1/hosts/{host_id}"], found
    assert seen[("GET", "/server-status")] == 200
    assert seen[("GET", "/api/v1/hosts")] == 401

    # the public status is counts only: every field a number (or the daemons' times)
    r = await client.get("/api/v1/status")
    status = ServerStatus.model_validate(await expect(r, 200))
    assert status.hosts_total == 3
    assert set(status.model_dump()) == set(ServerStatus.model_fields)

    # the operators see every name; the host sees its own
    listed = await expect(await client.get("/api/v1/hosts", headers=op_headers()), 200)
    assert {h["name"] for h in listed["hosts"]} == {canary, "bystander", f"{canary}-cli"}
    one = await expect(await client.get(f"/api/v1/hosts/{host_id}", headers=op_headers()), 200)
    assert (one["name"], one["host_id"], one["trust"][0]["runtime"]) == (canary, host_id, "process")
    me = await expect(await client.get("/api/v1/hosts/me", headers=bearer(token)), 200)
    assert (me["host_id"], me["name"]) == (host_id, canary)
    other = await expect(await client.get("/api/v1/hosts/me", headers=bearer(bystander)), 200)
    assert other["name"] == "bystander"


async def test_the_client_attaches_anonymously_by_default(client: Client, tmp_path: Path) -> None:
    url = str(client.make_url("")).rstrip("/")
    out = await attach_with_the_real_client(url, tmp_path / "client")
    (name,) = await _names(client)
    assert re.fullmatch(r"host-[0-9a-f]{6}", name), name
    assert name != socket.gethostname()
    assert f"({name})" in out  # the volunteer is told the name it got


async def test_the_host_endpoints_refuse_strangers(client: Client) -> None:
    host_id, token = await register(client, "h1")
    await expect(await client.get("/api/v1/hosts"), 401)
    await expect(await client.get("/api/v1/hosts", headers=bearer(token)), 401)
    await expect(await client.get(f"/api/v1/hosts/{host_id}", headers=bearer(token)), 401)
    await expect(await client.get("/api/v1/hosts/me"), 401)
    await expect(await client.get("/api/v1/hosts/me", headers=op_headers()), 401)
    await expect(await client.get("/api/v1/hosts/me", headers=bearer("forged")), 401)
    await expect(await client.get("/api/v1/hosts/999", headers=op_headers()), 404)
    await expect(await client.get("/api/v1/hosts/x1", headers=op_headers()), 400)
    r = await client.post(f"/api/v1/hosts/{host_id}/ban", headers=op_headers())
    await expect(r, 200)
    await expect(await client.get("/api/v1/hosts/me", headers=bearer(token)), 403, "host_banned")
    one = await expect(await client.get(f"/api/v1/hosts/{host_id}", headers=op_headers()), 200)
    assert one["banned"] is True
