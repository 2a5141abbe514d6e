"""The access log: one INFO line per request, never a query string or a header value.

The real app (``create_app``) on a loopback port, served with ``RedactingAccessLogger`` the
way ``yadml-server serve`` serves it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from work_server.access_log import (
    ACCESS_LOGGER_NAME,
    MAX_LOGGED_PATH,
    RedactingAccessLogger,
)
from work_server.app import create_app
from work_server.cli import build_parser
from work_server.config import ServerConfig

OPERATOR = "operator-token-that-must-not-be-logged"
#: a dedicated child of aiohttp's access logger: the test sees only its own lines
LOGGER = f"{ACCESS_LOGGER_NAME}.test"
LINE = re.compile(r'^\S+ "[A-Z]+ /\S*" \d{3} \d+ \d+\.\d{3}s$')

Client = TestClient[web.Request, web.Application]


def _config(tmp_path: Path, **overrides: Any) -> ServerConfig:
    return ServerConfig(
        state_dir=tmp_path / "var",
        runs_dir=tmp_path / "runs",
        operator_token=OPERATOR,
        run_daemons=False,
        **overrides,
    )


async def _serve(aiohttp_client: Any, config: ServerConfig) -> Client:
    server = TestServer(create_app(config))
    await server.start_server(
        access_log=logging.getLogger(LOGGER),
        access_log_class=RedactingAccessLogger.behind(config.trusted_proxies),
    )
    client: Client = await aiohttp_client(server)
    return client


async def _lines(caplog: pytest.LogCaptureFixture, n: int) -> list[logging.LogRecord]:
    """The access records, once ``n`` arrived (a line is written after the answer is sent)."""
    for _ in range(200):
        records = [r for r in caplog.records if r.name == LOGGER]
        if len(records) >= n:
            return records
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {n} access lines, got {caplog.records}")


async def test_lines_hold_no_query_string_and_no_header(
    aiohttp_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    client = await _serve(aiohttp_client, _config(tmp_path))
    secrets = {
        "query": "private-message-in-a-query",
        "refused": "token-in-a-url",
        "host": "host-token-in-a-header",
        "grant": "grant-payload.grant-mac",
        "cookie": "session-cookie-value",
        "referer": "referer-secret",
    }
    requests: list[tuple[str, str, Mapping[str, str], int]] = [
        ("GET", f"/api/v1/status?message={secrets['query']}", {}, 200),
        ("GET", f"/api/v1/jobs?token={secrets['refused']}", {}, 400),
        (
            "PUT",
            "/api/v1/results/1",
            {"Authorization": f"Bearer {secrets['host']}", "X-Upload-Grant": secrets["grant"]},
            401,
        ),
        ("GET", "/api/v1/jobs", {"Authorization": f"Bearer {OPERATOR}"}, 200),
        (
            "GET",
            "/healthz",
            {
                "Cookie": f"yadml_session={secrets['cookie']}",
                "Referer": f"http://x/?token={secrets['referer']}",
            },
            200,
        ),
    ]
    for method, url, headers, status in requests:
        r = await client.request(method, url, headers=headers)
        assert r.status == status, (url, await r.text())
    records = await _lines(caplog, len(requests))
    text = "\n".join(r.getMessage() for r in records)
    for secret in [*secrets.values(), OPERATOR]:
        assert secret not in text
    assert "?" not in text
    for record, (method, url, _, status) in zip(records, requests, strict=True):
        assert record.levelno == logging.INFO  # a 4xx is the client's problem, not a warning
        line = record.getMessage()
        assert LINE.match(line), line
        assert f'"{method} {url.partition("?")[0]}" {status} ' in line
        assert line.startswith("127.0.0.1 ")


async def test_client_ip_follows_the_rate_limiter_rules(
    aiohttp_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    forwarded = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
    untrusting = await _serve(aiohttp_client, _config(tmp_path / "a"))
    await untrusting.get("/healthz", headers=forwarded)
    behind_proxy = await _serve(
        aiohttp_client, _config(tmp_path / "b", trusted_proxies=frozenset({"127.0.0.1"}))
    )
    await behind_proxy.get("/healthz", headers=forwarded)
    first, second = await _lines(caplog, 2)
    assert first.getMessage().startswith("127.0.0.1 ")  # a forged header is not believed
    assert second.getMessage().startswith("203.0.113.7 ")  # the proxy's own hop only


async def test_long_paths_are_cut(
    aiohttp_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    client = await _serve(aiohttp_client, _config(tmp_path))
    assert (await client.get("/" + "a" * 4000)).status == 404
    (record,) = await _lines(caplog, 1)
    assert len(record.getMessage()) < MAX_LOGGED_PATH + 100
    assert "a..." in record.getMessage()


def test_off_below_info() -> None:
    logger = logging.getLogger(f"{LOGGER}.quiet")
    logger.setLevel(logging.WARNING)
    assert not RedactingAccessLogger(logger, "").enabled
    logger.setLevel(logging.INFO)
    assert RedactingAccessLogger(logger, "").enabled


def test_serve_has_it_on_by_default() -> None:
    assert build_parser().parse_args(["serve"]).access_log is True
    assert build_parser().parse_args(["serve", "--no-access-log"]).access_log is False
    assert build_parser().parse_args(["serve", "--access-log"]).access_log is True
