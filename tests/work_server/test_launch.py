"""Starting a server process and waiting for it: small real processes, no work server."""

from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from work_server.launch import (
    ServerStartError,
    free_port,
    log_tail,
    serve_command,
    spawn,
    start_server,
    stop_process,
    stop_processes,
    wait_healthy,
)


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert log_tail(log, 3) == "line 97\nline 98\nline 99"
    assert "cannot read" in log_tail(tmp_path / "missing.log")
    (tmp_path / "empty.log").write_text("")
    assert "is empty" in log_tail(tmp_path / "empty.log")


def test_serve_command(tmp_path: Path) -> None:
    cmd = serve_command(
        port=8123,
        state_dir=tmp_path / "var",
        runs_dir=tmp_path / "runs",
        host="0.0.0.0",
        extra=["--no-daemons"],
        interpreter_args=["-X", "dev"],
    )
    assert cmd[:6] == [sys.executable, "-X", "dev", "-m", "work_server", "serve"]
    assert cmd[6:] == [
        "--host", "0.0.0.0", "--port", "8123",
        "--state-dir", str(tmp_path / "var"), "--runs-dir", str(tmp_path / "runs"),
        "--no-daemons",
    ]  # fmt: skip
    assert "--host" not in serve_command(port=1, state_dir=tmp_path, runs_dir=tmp_path)


def test_a_process_that_dies_fails_the_wait_at_once_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    code = "import sys; print('cannot bind: address in use'); sys.exit(3)"
    proc = spawn([sys.executable, "-c", code], log_path=log)
    with pytest.raises(ServerStartError, match=r"(?s)exited with code 3.*address in use"):
        wait_healthy("http://127.0.0.1:9", proc, timeout_s=60, log_path=log)


def test_a_silent_process_times_out(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    proc = spawn([sys.executable, "-c", "import time; time.sleep(60)"], log_path=log)
    try:
        url = f"http://127.0.0.1:{free_port()}"
        with pytest.raises(ServerStartError, match=r"did not answer GET .*/healthz within 1 s"):
            wait_healthy(url, proc, timeout_s=1, log_path=log, interval_s=0.1)
    finally:
        assert stop_process(proc, timeout_s=10) != 0


def test_start_server_waits_until_it_answers(tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    cmd += ["--directory", str(tmp_path)]
    proc = start_server(cmd, url=f"http://127.0.0.1:{port}", log_path=tmp_path / "log", path="/")
    try:
        assert proc.poll() is None
    finally:
        stop_process(proc)
    assert proc.poll() is not None


def test_stop_processes_stops_them_together_and_kills_the_stubborn(tmp_path: Path) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    stubborn += "print('ready', flush=True); time.sleep(60)"
    procs = [
        spawn([sys.executable, "-c", "import time; time.sleep(60)"], log_path=tmp_path / "a"),
        spawn([sys.executable, "-c", stubborn], log_path=tmp_path / "b"),
    ]
    for _ in range(300):  # until it ignores SIGTERM
        if "ready" in (tmp_path / "b").read_text():
            break
        time.sleep(0.1)
    assert stop_processes(procs, timeout_s=1) == [-signal.SIGTERM, -signal.SIGKILL]
