"""Helpers of the token and audit tests: operators, personal tokens made over the API,
requests through a (trusted) proxy, the audit log as the API reads it."""

from __future__ import annotations

import time
from typing import Any

from argon2 import PasswordHasher

from tests.work_server.api.conftest import Client, expect, op_headers
from work_server import keys
from work_server.web.auth import Passwords, create_operator

FAST = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
PROXY_CLIENT = "203.0.113.7"  # the address a trusted proxy forwards


async def add_operator(client: Client, name: str = "alice") -> None:
    assert client.app is not None
    async with client.app[keys.SESSIONMAKER]() as session:
        await create_operator(
            session, name, "long enough password", passwords=FAST, now=time.time()
        )


async def make_token(
    client: Client, scopes: list[str], *, operator: str = "alice", **extra: Any
) -> dict[str, Any]:
    r = await client.post(
        "/api/v1/tokens",
        json={"operator": operator, "scopes": scopes, **extra},
        headers=op_headers(),
    )
    return await expect(r, 201)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Forwarded-For": PROXY_CLIENT}


async def audit_events(client: Client, token: str, **query: Any) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/audit", params=query, headers=auth(token))
    body = await expect(r, 200)
    events: list[dict[str, Any]] = body["events"]
    return events
