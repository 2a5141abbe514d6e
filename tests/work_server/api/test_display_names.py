"""A volunteer may choose a public display name (BOINC's anonymous-by-default hosts): only
hosts that chose one are listed publicly (top volunteers by credit, on ``GET
/api/v1/status`` and the server-status page), under that name only; withdrawing it takes
the host off the list. The private name stays in no public answer."""

from __future__ import annotations

import secrets

from sqlalchemy import update
from sqlmodel import col

from tests.work_server.api.conftest import Client, bearer, expect, op_headers
from work_server import keys
from work_server.db.models import Host
from yadml_common.wire import ServerStatus

PUBLIC_PAGES = ("/api/v1/status", "/server-status", "/server-status/live")


async def _register(client: Client, name: str, display_name: str | None = None) -> tuple[int, str]:
    body = {"name": name} if display_name is None else {"name": name, "display_name": display_name}
    answer = await expect(await client.post("/api/v1/hosts", json=body), 201)
    return answer["host_id"], answer["host_token"]


async def _set_credit(client: Client, host_id: int, credit: float) -> None:
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        await session.exec(update(Host).where(col(Host.id) == host_id).values(credit=credit))
        await session.commit()


async def _top(client: Client) -> list[tuple[str, float]]:
    status = ServerStatus.model_validate(await expect(await client.get("/api/v1/status"), 200))
    return [(v.display_name, v.credit) for v in status.top_volunteers]


async def _public_text(client: Client) -> str:
    return "\n".join([await (await client.get(path)).text() for path in PUBLIC_PAGES])


async def test_only_chosen_display_names_are_public(client: Client) -> None:
    private = f"privacy-canary-{secrets.token_hex(8)}"
    public = f"Ada {secrets.token_hex(4)}"
    named, token = await _register(client, private, f"  {public}  ")
    anonymous, _ = await _register(client, f"{private}-anonymous")
    runner_up, _ = await _register(client, "runner-up", "Grace")
    await _set_credit(client, named, 30.0)
    await _set_credit(client, anonymous, 99.0)  # the most credit, but no public name
    await _set_credit(client, runner_up, 12.5)

    assert await _top(client) == [(public, 30.0), ("Grace", 12.5)]  # trimmed, by credit
    text = await _public_text(client)
    assert public in text
    assert private not in text  # nor the anonymous host's name, which starts with it
    assert "99.0" not in text

    # the host and the operators see both names
    me = await expect(await client.get("/api/v1/hosts/me", headers=bearer(token)), 200)
    assert (me["name"], me["display_name"]) == (private, public)
    listed = await expect(await client.get("/api/v1/hosts", headers=op_headers()), 200)
    names = {h["host_id"]: (h["name"], h["display_name"]) for h in listed["hosts"]}
    assert names[named] == (private, public)
    assert names[anonymous] == (f"{private}-anonymous", None)

    # withdrawn: off the public list; chosen again (another name): back under that one
    r = await client.patch("/api/v1/hosts/me", json={"display_name": None}, headers=bearer(token))
    assert (await expect(r, 200))["display_name"] is None
    assert await _top(client) == [("Grace", 12.5)]
    assert public not in await _public_text(client)
    r = await client.patch(
        "/api/v1/hosts/me", json={"display_name": "Lovelace"}, headers=bearer(token)
    )
    assert (await expect(r, 200))["name"] == private
    assert await _top(client) == [("Lovelace", 30.0), ("Grace", 12.5)]


async def test_the_top_list_is_ten_long_and_leaves_banned_hosts_out(client: Client) -> None:
    ids = [(await _register(client, f"h{i}", f"volunteer {i}"))[0] for i in range(12)]
    for i, host_id in enumerate(ids):
        await _set_credit(client, host_id, float(i))
    await expect(await client.post(f"/api/v1/hosts/{ids[11]}/ban", headers=op_headers()), 200)
    top = await _top(client)
    assert [name for name, _ in top] == [f"volunteer {i}" for i in range(10, 0, -1)]


async def test_bad_display_names_are_refused_with_a_reason(client: Client) -> None:
    _, token = await _register(client, "h")
    bad = {
        "": "at least 1 character",
        "   ": "at least 1 character",
        "x" * 65: "at most 64 characters",
        "bell\x07": "printable",
        "line\nbreak": "printable",
        "zero\u200bwidth": "printable",
        "<script>alert(1)</script>": "not HTML",
        "Tom &amp; Jerry": "not HTML",
        "&#60;b&#62;": "not HTML",
    }
    for value, reason in bad.items():
        r = await client.post("/api/v1/hosts", json={"name": "x", "display_name": value})
        assert reason in (await expect(r, 422, "invalid_body"))["detail"], value
        r = await client.patch(
            "/api/v1/hosts/me", json={"display_name": value}, headers=bearer(token)
        )
        body = await expect(r, 422, "invalid_body")
        assert body["detail"].startswith("display_name: "), body
    r = await client.patch("/api/v1/hosts/me", json={}, headers=bearer(token))
    await expect(r, 422, "invalid_body")  # withdrawing is an explicit null
    await expect(await client.patch("/api/v1/hosts/me", json={"display_name": "x"}), 401)
    r = await client.patch("/api/v1/hosts/me", json={"display_name": "x"}, headers=op_headers())
    await expect(r, 401)
    assert await _top(client) == []
