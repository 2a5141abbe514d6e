"""A ban over the API: the banned host's next heartbeat aborts its units, its upload of a
revoked result is refused and stores nothing (also after an unban), and the work goes to
another host after one transitioner pass."""

from __future__ import annotations

import time

from tests.work_server.api.conftest import (
    Client,
    Unit,
    bearer,
    db_snapshot,
    expect,
    fetch_unit,
    make_result,
    op_headers,
    register,
    start_digits_job,
)
from work_server import keys
from work_server.config import ServerConfig
from work_server.daemons import transitioner


def _upload_headers(unit: Unit, token: str) -> dict[str, str]:
    grant = unit.raw["upload"].get("grant")  # the grant travels in a header, when it does
    return {**bearer(token), **({"X-Upload-Grant": grant} if grant else {})}


async def _heartbeat(client: Client, token: str, unit: Unit) -> list[int]:
    running = {"running": [{"result_id": unit.result_id, "fraction_done": 0.5}]}
    r = await client.post("/api/v1/hosts/heartbeat", json=running, headers=bearer(token))
    abort: list[int] = (await expect(r, 200))["abort"]
    return abort


async def test_ban_revokes_aborts_refuses_and_reissues(
    client: Client, config: ServerConfig
) -> None:
    await start_digits_job(client, shards=2)
    banned_id, banned = await register(client, "banned")
    _, other = await register(client, "other")
    unit = await fetch_unit(client, banned)
    assert await _heartbeat(client, banned, unit) == []  # still wanted

    r = await client.post(f"/api/v1/hosts/{banned_id}/ban", headers=op_headers())
    assert (await expect(r, 200))["banned"]
    assert await _heartbeat(client, banned, unit) == [unit.result_id]

    before = db_snapshot(config)
    result = make_result(unit.weights)
    r = await client.put(unit.upload_url, data=result, headers=_upload_headers(unit, banned))
    await expect(r, 403, "host_banned")
    assert db_snapshot(config) == before  # no blob, no row

    app = client.app
    assert app is not None
    async with app[keys.SESSIONMAKER]() as session:
        await transitioner.run_once(session, time.time())
    r = await client.post("/api/v1/work", json={"max_units": 2}, headers=bearer(other))
    units = (await expect(r, 200))["units"]
    assert unit.raw["workunit_id"] in {u["workunit_id"] for u in units}

    # unbanning restores dispatch, not the revoked result
    r = await client.post(f"/api/v1/hosts/{banned_id}/unban", headers=op_headers())
    assert not (await expect(r, 200))["banned"]
    before = db_snapshot(config)
    r = await client.put(unit.upload_url, data=result, headers=_upload_headers(unit, banned))
    await expect(r, 410, "result_revoked")
    assert db_snapshot(config) == before
    assert await _heartbeat(client, banned, unit) == [unit.result_id]
    r = await client.post("/api/v1/work", json={}, headers=bearer(banned))
    assert (await expect(r, 200))["units"] == []  # the other host holds both units now
