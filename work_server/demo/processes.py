"""Child process commands, ports, the state dir and starting/stopping the server and clients."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from work_server.demo.options import (
    DAEMON_INTERVAL_S,
    HOST,
    STATE_MARKER,
    DemoError,
    DemoOptions,
    Terminated,
    attack_plan,
)
from work_server.launch import (
    ServerStartError,
    free_port,
    log_tail,
    serve_command,
    spawn,
    wait_healthy,
)

# --------------------------------------------------------------------------- commands


def server_command(opts: DemoOptions, port: int) -> list[str]:
    cmd = serve_command(
        host=HOST, port=port, state_dir=opts.state_dir, runs_dir=opts.runs_dir,
        extra=[
            "--interval-transitioner", DAEMON_INTERVAL_S,
            "--interval-validator", DAEMON_INTERVAL_S,
            "--interval-aggregator", DAEMON_INTERVAL_S,
            "--retry-after", DAEMON_INTERVAL_S,
            # ~10 requests a second (clients polling, the demo's own status polls) would
            # bury the job's lines that the demo's server.log is read for
            "--no-access-log",
        ],
    )  # fmt: skip
    if opts.data_dir is not None:
        cmd += ["--data-dir", str(opts.data_dir)]
    if opts.worker_image is not None and opts.executor == "docker":
        cmd += ["--worker-image", opts.worker_image]
    return cmd


def client_state_dir(opts: DemoOptions, index: int) -> Path:
    return opts.state_dir / "clients" / str(index)


def client_attach_command(opts: DemoOptions, index: int, url: str) -> list[str]:
    return [
        sys.executable, "-m", "volunteer_client",
        "--state-dir", str(client_state_dir(opts, index)),
        "attach", url,
        "--name", f"volunteer-{index}",
        "--runtimes", opts.executor,
    ]  # fmt: skip


def client_run_command(opts: DemoOptions, index: int) -> list[str]:
    name, attackers = attack_plan(opts)
    # fault injection and attackers: testing and demos only, through the client's testing
    # entry point (the volunteer's yadml-client has no such switches)
    injecting = bool(opts.faults.strip()) or index in attackers
    cmd = [
        sys.executable, "-m", "volunteer_client.testing" if injecting else "volunteer_client",
        "--state-dir", str(client_state_dir(opts, index)),
        "run",
        "--executor", opts.executor,
        "--threads", "1",
    ]  # fmt: skip
    if opts.cold:
        cmd.append("--cold")
    if opts.faults.strip():
        cmd += ["--faults", opts.faults, "--fault-seed", str(opts.seed * 1000 + index)]
    if index in attackers:
        cmd += ["--attack", name]
    return cmd


def child_env(*, operator_token: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("YADML_OPERATOR_TOKEN", None)
    env["PYTHONUNBUFFERED"] = "1"
    if operator_token is not None:
        env["YADML_OPERATOR_TOKEN"] = operator_token
    return env


# --------------------------------------------------------------------------- ports, dirs


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # aiohttp binds with SO_REUSEADDR: a port in TIME_WAIT is usable, a listening one is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int, host: str = HOST) -> tuple[int, bool]:
    """``(port, moved)``: the preferred port if it is free, else an OS-chosen free one."""
    if preferred != 0 and port_is_free(preferred, host):
        return preferred, False
    return free_port(host), preferred != 0


def prepare_state_dir(path: Path, *, reuse: bool) -> None:
    """Create the demo's state dir; wipe a previous demo's one unless ``reuse``.

    A non-empty directory without the demo's marker file is never deleted.
    """
    if path.exists() and not reuse and any(path.iterdir()):
        if not (path / STATE_MARKER).is_file():
            raise DemoError(
                f"{path} is not empty and was not created by the demo; "
                "choose another --state-dir or pass --reuse-state"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / STATE_MARKER).write_text("state directory of `python -m work_server.demo`\n")


# --------------------------------------------------------------------------- processes


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_child(name: str, cmd: Sequence[str], log_path: Path, env: Mapping[str, str]) -> Child:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n### {time.strftime('%Y-%m-%d %H:%M:%S')} $ {' '.join(cmd)}\n".encode())
    # Own process group: Ctrl-C reaches only the demo, which stops children in order.
    proc = spawn(cmd, log_path=log_path, env=env, new_session=True)
    return Child(name=name, proc=proc, log_path=log_path)


def _kill_group(child: Child) -> None:
    try:
        os.killpg(child.proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        child.proc.kill()


def stop_children(children: Sequence[Child], *, timeout_s: float = 10.0) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL the whole process group."""
    for child in children:
        if child.alive():
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    try:
        for child in children:
            remaining = max(0.0, deadline - time.monotonic())
            with suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=remaining)
    except (KeyboardInterrupt, Terminated):
        pass  # a second Ctrl-C or SIGTERM: do not wait any longer
    for child in children:
        if child.alive():
            _kill_group(child)
            child.proc.wait()


@dataclass
class Demo:
    """The processes the demo started; :meth:`stop` ends them all."""

    opts: DemoOptions
    console: Console
    server: Child | None = None
    #: ``attach`` processes while they run, then the ``run`` daemons.
    clients: list[Child] = field(default_factory=list)

    def stop(self) -> None:
        if self.server is None and not self.clients:
            return
        self.console.print("[dim]stopping volunteer clients and server ...[/]")
        stop_children(self.clients)  # first, so they can still talk to the server
        self.clients = []
        if self.server is not None:
            stop_children([self.server])
            self.server = None

    def start_server(self, port: int, token: str) -> Child:
        self.server = start_child(
            "server",
            server_command(self.opts, port),
            self.opts.state_dir / "server.log",
            child_env(operator_token=token),
        )
        return self.server

    def check_server(self) -> None:
        server = self.server
        if server is not None and not server.alive():
            raise DemoError(
                f"the server exited with code {server.proc.returncode}; "
                f"last lines of {server.log_path}:\n{log_tail(server.log_path)}"
            )

    def wait_healthy(self, url: str) -> None:
        if self.server is None:
            raise DemoError("the server was not started")
        try:
            wait_healthy(
                url,
                self.server.proc,
                timeout_s=self.opts.startup_timeout_s,
                log_path=self.server.log_path,
            )
        except ServerStartError as exc:
            raise DemoError(str(exc)) from None

    def start_clients(self, url: str) -> None:
        """Attach every volunteer (in parallel), then start their ``run`` daemons."""
        env = child_env()
        indices = range(1, self.opts.volunteers + 1)
        self.clients = [
            start_child(
                f"volunteer-{i} attach",
                client_attach_command(self.opts, i, url),
                client_state_dir(self.opts, i) / "client.log",
                env,
            )
            for i in indices
        ]
        deadline = time.monotonic() + self.opts.startup_timeout_s
        for child in self.clients:
            try:
                rc = child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise DemoError(
                    f"{child.name} did not finish within {self.opts.startup_timeout_s:.0f} s; "
                    f"last lines of {child.log_path}:\n{log_tail(child.log_path)}"
                ) from None
            if rc != 0:
                raise DemoError(
                    f"{child.name} failed with exit code {rc}; "
                    f"last lines of {child.log_path}:\n{log_tail(child.log_path)}"
                )
        self.clients = [
            start_child(
                f"volunteer-{i}",
                client_run_command(self.opts, i),
                client_state_dir(self.opts, i) / "client.log",
                env,
            )
            for i in indices
        ]
