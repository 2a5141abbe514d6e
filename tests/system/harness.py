"""Real processes for system tests: the work server and volunteer clients, on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "work_server",
                    "serve",
                    "--port",
                    str(self.port),
                    "--state-dir",
                    str(self.root / "var"),
                    "--runs-dir",
                    str(self.root / "runs"),
                    *FAST_DAEMONS,
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_until(self._healthy, self.start_timeout, f"server health (log: {self.log})")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited: {self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

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
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self._cmd(
                    "run", "--threads", "1", "--heartbeat-s", "1", "--backoff-max-s", "2", *extra
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

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
