"""Real processes for system tests: the work server and volunteer clients, on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from work_server.launch import free_port, serve_command, spawn, stop_process, wait_healthy

OPERATOR = "system-test-operator-token"
FAST_DAEMONS = [
    "--interval-transitioner",
    "0.3",
    "--interval-validator",
    "0.3",
    "--interval-aggregator",
    "0.3",
    "--retry-after",
    "0.3",
]


def wait_until(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class ServerProcess:
    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    extra_args: list[str] = field(default_factory=list)
    #: seconds to wait for /healthz (several servers starting at once on a busy machine)
    start_timeout: float = 60.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def start(self) -> None:
        self.starts += 1
        env = {**os.environ, "YADML_OPERATOR_TOKEN": OPERATOR}
        cmd = serve_command(
            port=self.port,
            state_dir=self.root / "var",
            runs_dir=self.root / "runs",
            extra=[*FAST_DAEMONS, *self.extra_args],
        )
        self.proc = spawn(cmd, log_path=self.log, env=env)
        wait_healthy(self.url, self.proc, timeout_s=self.start_timeout, log_path=self.log)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig=sig, timeout_s=30)

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.url}{path}",
            timeout=30,
            headers={"Authorization": f"Bearer {OPERATOR}"},
            **kw,
        )

    def job(self, job_id: int) -> dict[str, Any]:
        r = self.api("GET", f"/api/v1/jobs/{job_id}")
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data


@dataclass
class ClientProcess:
    state_dir: Path
    server_url: str
    name: str
    proc: subprocess.Popen[bytes] | None = None
    runtimes: str = "process"

    @property
    def log(self) -> Path:
        return self.state_dir / "client.log"

    def _cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "volunteer_client", "--state-dir", str(self.state_dir), *args]

    def attach(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            self._cmd("attach", self.server_url, "--name", self.name, "--runtimes", self.runtimes),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self, *extra: str) -> None:
        self.proc = spawn(
            self._cmd(
                "run", "--threads", "1", "--heartbeat-s", "1", "--backoff-max-s", "2", *extra
            ),
            log_path=self.log,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        return None if self.proc is None else stop_process(self.proc, sig=sig, timeout_s=timeout)

    def units_in_flight(self) -> list[Path]:
        return [p for p in (self.state_dir / "units").glob("*") if p.is_dir()]


@contextmanager
def cluster(
    root: Path,
    n_clients: int,
    *,
    server_args: Sequence[str] = (),
    runtimes: str = "process",
) -> Iterator[tuple[ServerProcess, list[ClientProcess]]]:
    server = ServerProcess(root, extra_args=list(server_args))
    clients: list[ClientProcess] = []
    try:
        server.start()
        for i in range(n_clients):
            c = ClientProcess(root / f"client{i}", server.url, f"volunteer-{i}", runtimes=runtimes)
            c.attach()
            clients.append(c)
        yield server, clients
    finally:
        for c in clients:
            c.stop()
        server.kill(signal.SIGTERM)
