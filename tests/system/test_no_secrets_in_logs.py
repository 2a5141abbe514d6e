"""No credential in any log after a full job (issue 19): a real server process with its
access log on (the default), real volunteer client processes, the digits dataset.

Every credential in play is collected, then looked for in the server's log (and the
clients' logs, where httpx writes each request's URL):
- the operator token (the harness's, sent by every ``server.api`` call);
- each host's token, from the clients' ``attachment.json``;
- every upload grant the server issued: this test's own host reads its grants from the
  work replies; the clients' grants are signed again from the database with the server's
  grant key (HMAC is deterministic: same payload, same grant), a method checked against
  the grants read from the replies.
Requests that put a credential in the URL are refused (400), and their access lines hold
the path only.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.system.harness import OPERATOR, ServerProcess, cluster, wait_until
from work_server.config import ServerConfig
from work_server.signing import UploadGrant, UploadGrants
from yadml_common.wire import UPLOAD_GRANT_HEADER

pytestmark = pytest.mark.slow

JOB: dict[str, Any] = {
    "dataset": "digits",
    "shards": 2,
    "rounds": 2,
    "local_epochs": 1,
    "lr": 0.003,
    "batch_size": 32,
    "seed": 3,
}
#: the shape of any upload grant: base64url(JSON payload, so ``eyJ``...) "." base64url(HMAC)
GRANT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}")
#: one access line: client ip, "METHOD path", status, bytes, seconds
ACCESS_LINE = re.compile(r'INFO aiohttp\.access: \S+ "[A-Z]+ (/\S*)" \d{3} \d+ \d+\.\d{3}s$')


def _issued_grants(server: ServerProcess) -> dict[int, str]:
    """Every result's upload grant, signed again from its row (see the module docstring)."""
    var = server.root / "var"
    grants = UploadGrants.load_or_create(var)
    grace = ServerConfig(state_dir=var, runs_dir=var, operator_token="").upload_grant_grace_s
    con = sqlite3.connect(var / "yadml.db")
    try:
        rows = con.execute(
            "SELECT r.id, r.host_id, r.deadline, w.max_output_bytes FROM result r "
            "JOIN workunit w ON w.id = r.workunit_id WHERE r.host_id IS NOT NULL"
        ).fetchall()
    finally:
        con.close()
    return {
        rid: grants.issue(UploadGrant(rid, host, limit, expires=deadline + grace))
        for rid, host, deadline, limit in rows
    }


def _own_host_takes_a_unit(server: ServerProcess) -> tuple[str, dict[str, Any]]:
    """Register a host of our own and claim one unit: its token and the unit, grant and all.
    It uploads garbage with the grant in its header (refused), then reports a failure so
    the unit goes back to the clients."""
    r = httpx.post(f"{server.url}/api/v1/hosts", json={"name": "log-auditor"}, timeout=30)
    r.raise_for_status()
    token = r.json()["host_token"]
    auth = {"Authorization": f"Bearer {token}"}

    def claim() -> dict[str, Any] | None:
        units = httpx.post(f"{server.url}/api/v1/work", json={}, headers=auth, timeout=30)
        units.raise_for_status()
        got: list[dict[str, Any]] = units.json()["units"]
        return got[0] if got else None

    unit: dict[str, Any] = wait_until(claim, 120, "a unit for the auditing host", interval=0.3)
    up = unit["upload"]
    put = httpx.put(
        f"{server.url}{up['url']}",
        content=b"not a safetensors file",
        headers={**auth, UPLOAD_GRANT_HEADER: up["grant"]},
        timeout=30,
    )
    assert put.status_code == 422, put.text  # the grant was good: the body was read
    # the same grant in the URL is refused before the handler
    leaked = httpx.put(f"{server.url}{up['url']}?grant={up['grant']}", headers=auth, timeout=30)
    assert leaked.status_code == 400, leaked.text
    assert leaked.json()["error"] == "credential_in_url"
    fail = httpx.post(
        f"{server.url}{up['url']}/failure",
        json={"reason": "other", "detail": "the log audit host steps aside"},
        headers=auth,
        timeout=30,
    )
    fail.raise_for_status()
    return token, unit


def test_no_credential_in_the_logs_after_a_full_job(tmp_path: Path) -> None:
    with cluster(tmp_path, 2) as (server, clients):
        r = server.api("POST", "/api/v1/jobs", json=JOB)
        assert r.status_code == 201, r.text
        job_id = int(r.json()["id"])
        own_token, own_unit = _own_host_takes_a_unit(server)
        for c in clients:
            c.start()
        refused = server.api("GET", f"/api/v1/jobs?token={OPERATOR}")
        assert refused.status_code == 400, refused.text
        job = wait_until(
            lambda: (j := server.job(job_id))["state"] in ("completed", "failed") and j,
            300,
            f"job {job_id} to finish",
            interval=0.5,
        )
        assert job["state"] == "completed", job
        host_tokens = [
            json.loads((c.state_dir / "attachment.json").read_text())["host_token"] for c in clients
        ]
        grants = _issued_grants(server)
    # the re-signed grants are the server's: the one read from a work reply matches
    assert grants[own_unit["result_id"]] == own_unit["upload"]["grant"]
    assert len(grants) >= 1 + 2 * JOB["rounds"]

    server_log = server.log.read_text()
    access = [m.group(1) for line in server_log.splitlines() if (m := ACCESS_LINE.search(line))]
    # the access log is on and useful: the volunteer calls and the refusals are there
    assert "/api/v1/work" in access
    assert "/api/v1/hosts/heartbeat" in access
    assert any(p.startswith("/api/v1/results/") for p in access)
    assert f"/api/v1/jobs/{job_id}" in access
    assert "/api/v1/jobs" in access
    assert " WARNING aiohttp.access" not in server_log  # INFO lines, whatever the status
    assert "?" not in "".join(access)

    secrets = {
        "operator token": OPERATOR,
        "auditing host token": own_token,
        **{f"host token {i}": t for i, t in enumerate(host_tokens)},
        **{f"upload grant of result {rid}": g for rid, g in grants.items()},
    }
    logs = {"server.log": server_log}
    logs |= {f"{c.name}/client.log": c.log.read_text() for c in clients}
    for log_name, text in logs.items():
        for what, secret in secrets.items():
            assert secret not in text, f"{what} is in {log_name}"
        assert not GRANT_SHAPE.search(text), f"something shaped like a grant is in {log_name}"
