"""Hostile input against the token and audit endpoints: bad scopes, bad expiry, bad notes,
unknown operators, foreign and malformed token ids, bad paging. Every refusal is a 4xx
with a reason and changes nothing (no token, no audit event)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.work_server.api.access_helpers import add_operator, auth, make_token
from tests.work_server.api.conftest import Client, db_snapshot, expect, op_headers
from work_server.config import ServerConfig

DAY = 86400


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"operator": "alice", "scopes": ["root"]}, 422, "invalid_body"),
        ({"operator": "alice", "scopes": []}, 422, "invalid_body"),
        ({"operator": "alice", "scopes": "read"}, 422, "invalid_body"),
        ({"operator": "alice", "scopes": ["read"] * 5}, 422, "invalid_body"),
        ({"operator": "alice", "scopes": ["READ"]}, 422, "invalid_body"),
        ({"operator": "alice", "scopes": ["read"], "expires_in_s": 0}, 422, "invalid_body"),
        ({"operator": "alice", "scopes": ["read"], "expires_in_s": -60}, 422, "invalid_body"),
        ({"operator": "alice", "scopes": ["read"], "expires_in_s": 59}, 422, "invalid_body"),
        ({"operator": "alice", "scopes": ["read"], "expires_in_s": 2**63}, 422, "invalid_body"),
        ({"operator": "alice", "scopes": ["read"], "expires_in_s": "30d"}, 422, "invalid_body"),
        ({"operator": "alice", "scopes": ["read"], "expires_in_s": 1.5}, 422, "invalid_body"),
        ({"operator": "alice", "scopes": ["read"], "note": "x" * 201}, 422, "invalid_body"),
        ({"operator": "alice", "scopes": ["read"], "note": "bell\x07"}, 422, "invalid_note"),
        ({"operator": "alice", "scopes": ["read"], "admin": True}, 422, "invalid_body"),
        ({"operator": "mallory", "scopes": ["read"]}, 404, "unknown_operator"),
        ({"operator": "alice\x00", "scopes": ["read"]}, 404, "unknown_operator"),
        ({"operator": "' OR 1=1 --", "scopes": ["admin"]}, 404, "unknown_operator"),
        ({"operator": "", "scopes": ["read"]}, 422, "invalid_body"),
        ({"scopes": ["read"]}, 422, "invalid_body"),
    ],
)
async def test_bad_token_requests_are_refused_and_change_nothing(
    client: Client, config: ServerConfig, body: dict[str, Any], status: int, error: str
) -> None:
    await add_operator(client)
    before = db_snapshot(config)
    r = await client.post("/api/v1/tokens", json=body, headers=op_headers())
    await expect(r, status, error)
    assert db_snapshot(config) == before


async def test_scope_and_expiry_limits_are_inclusive(client: Client) -> None:
    await add_operator(client)
    await make_token(client, ["read", "read"], expires_in_s=60)  # duplicates collapse
    made = await make_token(client, ["admin", "read"], expires_in_s=3650 * DAY)
    assert made["scopes"] == ["admin", "read"]
    r = await client.post(
        "/api/v1/tokens",
        json={"operator": "alice", "scopes": ["read"], "expires_in_s": 3650 * DAY + 1},
        headers=op_headers(),
    )
    await expect(r, 422, "invalid_body")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/tokens/999", 404),
        ("/api/v1/tokens/0", 404),
        ("/api/v1/tokens/abc", 400),
        ("/api/v1/tokens/-1", 400),
        ("/api/v1/tokens/1234567890123456789", 400),
        ("/api/v1/tokens/%2e%2e", 404),  # normalised to /api/v1/: no such route
    ],
)
async def test_revoking_unknown_or_malformed_ids(
    client: Client, config: ServerConfig, path: str, status: int
) -> None:
    await add_operator(client)
    await make_token(client, ["read"])
    before = db_snapshot(config)
    await expect(await client.delete(path, headers=op_headers()), status)
    assert db_snapshot(config) == before


async def test_only_admin_tokens_manage_tokens(client: Client, config: ServerConfig) -> None:
    await add_operator(client)
    await add_operator(client, "bob")
    victim = await make_token(client, ["admin"], operator="bob")
    for scopes in (["read"], ["jobs"], ["hosts"], ["read", "jobs", "hosts"]):
        token = (await make_token(client, scopes))["token"]
        # a refused request still counts as a use (last_used_at); after that, nothing changes
        await expect(await client.get("/api/v1/tokens", headers=auth(token)), 403)
        before = db_snapshot(config)
        for r in (
            await client.delete(f"/api/v1/tokens/{victim['id']}", headers=auth(token)),
            await client.get("/api/v1/tokens", headers=auth(token)),
            await client.post(
                "/api/v1/tokens",
                json={"operator": "alice", "scopes": ["admin"]},
                headers=auth(token),
            ),
        ):
            await expect(r, 403, "insufficient_scope")
        assert db_snapshot(config) == before
    # the victim's token still works
    await expect(await client.get("/api/v1/tokens", headers=auth(victim["token"])), 200)


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "ten"},
        {"limit": "-1"},
        {"before": "0"},
        {"before": "1e3"},
        {"before": "9" * 19},
        {"before": ""},
    ],
)
async def test_bad_audit_paging_is_400(client: Client, query: dict[str, str]) -> None:
    await expect(await client.get("/api/v1/audit", params=query, headers=op_headers()), 400)


@pytest.mark.parametrize("operator", ["", "x" * 65])
async def test_bad_token_filters_are_400(client: Client, operator: str) -> None:
    r = await client.get("/api/v1/tokens", params={"operator": operator}, headers=op_headers())
    await expect(r, 400)


async def test_token_filters_match_names_exactly(client: Client) -> None:
    await add_operator(client)
    await make_token(client, ["read"])
    for name in ("alice", "ALICE", "%", "alice\x00", "' OR '1'='1"):
        r = await client.get("/api/v1/tokens", params={"operator": name}, headers=op_headers())
        tokens = (await expect(r, 200))["tokens"]
        assert len(tokens) == (1 if name == "alice" else 0), name


@pytest.mark.parametrize(
    "header",
    [
        "Bearer yadml_pat_" + "A" * 300,  # longer than any token: refused before any lookup
        "Bearer yadml_pat_",
        "Basic YWxpY2U6cGFzc3dvcmQ=",
        "Bearer",
        "yadml_pat_abc",
    ],
)
async def test_malformed_operator_credentials_are_401(client: Client, header: str) -> None:
    r = await client.get("/api/v1/audit", headers={"Authorization": header})
    await expect(r, 401)
