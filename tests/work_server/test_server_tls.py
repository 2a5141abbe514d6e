"""``yadml-server serve --tls-cert/--tls-key`` in a real process: HTTPS that the client
verifies against a custom CA, and ``key show`` printing the fingerprint it serves."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.system.harness import free_port
from tests.tlsutil import self_signed
from volunteer_client.api import ServerAPI, tls_context
from volunteer_client.errors import TransientError


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
    log = (tmp_path / "server.log").open("wb")
    env = {**os.environ, "YADML_OPERATOR_TOKEN": "tls-test-operator"}
    cmd = [sys.executable, "-m", "work_server", "serve", "--port", str(port)]
    cmd += ["--state-dir", str(state), "--runs-dir", str(tmp_path / "runs"), "--no-daemons"]
    cmd += ["--tls-cert", str(cert), "--tls-key", str(key)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", verify=tls_context(cert), timeout=1).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.3)

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
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
