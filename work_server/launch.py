"""Starting ``yadml-server serve`` (or any HTTP server) as a child process and waiting until
it answers: one implementation for the demo, the system tests and the benchmarks.

A start that fails says why: the process's exit code or the wait that ran out, with the last
lines of its log, instead of a bare timeout.
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"


class ServerStartError(RuntimeError):
    """The server process exited, or did not answer its health check in time."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of ``path``, or a note saying why there are none."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"({path} is empty)"


def serve_command(
    *,
    port: int,
    state_dir: Path,
    runs_dir: Path,
    host: str | None = None,
    extra: Sequence[str] = (),
    interpreter_args: Sequence[str] = (),
) -> list[str]:
    """``python [interpreter_args] -m work_server serve --port ... [extra]`` with this
    interpreter (``interpreter_args``: e.g. ``-m cProfile -o FILE``)."""
    cmd = [sys.executable, *interpreter_args, "-m", "work_server", "serve"]
    if host is not None:
        cmd += ["--host", host]
    cmd += ["--port", str(port), "--state-dir", str(state_dir), "--runs-dir", str(runs_dir)]
    return [*cmd, *extra]


def spawn(
    cmd: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with stdout and stderr appended to ``log_path`` and no stdin.
    ``new_session``: its own process group, so a Ctrl-C in the terminal reaches only the
    parent, which stops its children in order."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            start_new_session=new_session,
        )


def wait_healthy(
    url: str,
    proc: subprocess.Popen[bytes],
    *,
    timeout_s: float = 60.0,
    log_path: Path | None = None,
    path: str = "/healthz",
    verify: ssl.SSLContext | bool = True,
    interval_s: float = 0.2,
    what: str = "the server",
) -> None:
    """Poll ``GET url+path`` until it answers 200. Raises :class:`ServerStartError` as soon
    as ``proc`` exits, or after ``timeout_s``; the message ends with ``log_path``'s tail."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0, verify=verify) as http:
        while True:
            if proc.poll() is not None:
                raise ServerStartError(
                    f"{what} exited with code {proc.returncode}{_tail(log_path)}"
                )
            try:
                if http.get(f"{url}{path}").status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{what} did not answer GET {url}{path} within {timeout_s:.0f} s"
                    f"{_tail(log_path)}"
                )
            time.sleep(interval_s)


def start_server(
    cmd: Sequence[str],
    *,
    url: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
    path: str = "/healthz",
) -> subprocess.Popen[bytes]:
    """:func:`spawn` then :func:`wait_healthy`; a server that does not come up is stopped
    before the error propagates."""
    proc = spawn(cmd, log_path=log_path, env=env)
    try:
        wait_healthy(url, proc, timeout_s=timeout_s, log_path=log_path, path=path)
    except BaseException:
        stop_process(proc, timeout_s=10.0)
        raise
    return proc


def stop_processes(
    procs: Sequence[subprocess.Popen[bytes]],
    *,
    timeout_s: float = 30.0,
    sig: int = signal.SIGTERM,
) -> list[int]:
    """Send ``sig`` to each process still running (all first, so they stop in parallel), wait
    up to ``timeout_s`` for them all, then SIGKILL the rest. Returns the exit codes."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    return [proc.wait() for proc in procs]


def stop_process(
    proc: subprocess.Popen[bytes], *, timeout_s: float = 30.0, sig: int = signal.SIGTERM
) -> int:
    """:func:`stop_processes` for one process."""
    return stop_processes([proc], timeout_s=timeout_s, sig=sig)[0]


def _tail(log_path: Path | None) -> str:
    if log_path is None:
        return ""
    return f"; last lines of {log_path}:\n{log_tail(log_path)}"
