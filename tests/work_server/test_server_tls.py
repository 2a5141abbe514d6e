"""``yadml-server serve --tls-cert/--tls-key`` in a real process: HTTPS that the client
verifies against a custom CA, and ``key show`` printing the fingerprint it serves."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tlsutil import self_signed
from volunteer_client.api import ServerAPI, tls_context
from volunteer_client.errors import TransientError
from work_server.launch import free_port, serve_command, spawn, stop_process, wait_healthy


def test_https_server(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "tls")
    state = tmp_path / "var"
    show = subprocess.run(
        [sys.executable, "-m", "work_server", "key", "show", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    fingerprint = show.stdout.strip().splitlines()[-1]
    assert fingerprint.startswith("SHA256:")
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "YADML_OPERATOR_TOKEN": "tls-test-operator"}
    cmd = serve_command(
        port=port,
        state_dir=state,
        runs_dir=tmp_path / "runs",
        extra=["--no-daemons", "--tls-cert", str(cert), "--tls-key", str(key)],
    )
    proc = spawn(cmd, log_path=log, env=env)
    url = f"https://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout_s=60, log_path=log, verify=tls_context(cert))

        async def check() -> None:
            async with ServerAPI(base_url=url, ca_cert=cert, timeout=5.0) as api:
                assert (await api.project()).fingerprint == fingerprint
            async with ServerAPI(base_url=url, timeout=5.0) as api:
                with pytest.raises(TransientError, match="CERTIFICATE_VERIFY_FAILED"):
                    await api.project()
            async with ServerAPI(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as api:
                with pytest.raises(TransientError):  # plain HTTP is not served
                    await api.project()

        asyncio.run(check())
        assert fingerprint in (tmp_path / "server.log").read_text()
    finally:
        stop_process(proc)
