from __future__ import annotations

import asyncio
import re
import socket
import stat
from pathlib import Path

import pytest

from volunteer_client.cli import detect_host, main
from volunteer_client.state import StateDir

from .fake_server import FakeWorkServer


async def test_attach_status_run_once_detach(
    fake_server: FakeWorkServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = str(tmp_path / "client")

    def cli(*args: str) -> int:
        return main(["--state-dir", state_dir, *args])

    # main() runs its own event loop, so it runs in a thread next to the fake server's loop
    assert await asyncio.to_thread(cli, "attach", fake_server.url, "--name", "pc-1") == 0
    state = StateDir(Path(state_dir))
    attachment = state.require_attachment()
    assert (attachment.host_id, attachment.name, attachment.runtimes) == (1, "pc-1", ["process"])
    assert stat.S_IMODE(state.attachment_path.stat().st_mode) == 0o600
    assert fake_server.registered[0].cpus >= 1
    assert await asyncio.to_thread(cli, "attach", fake_server.url) == 1  # already attached

    assert await asyncio.to_thread(cli, "run", "--once", "--log-level", "WARNING") == 0
    assert len(fake_server.work_requests) == 1
    assert fake_server.work_requests[0].runtimes == ["process"]

    assert await asyncio.to_thread(cli, "status") == 0
    out = capsys.readouterr().out
    assert fake_server.url in out
    assert "host:      1 (pc-1)" in out
    assert "secret" not in out

    assert await asyncio.to_thread(cli, "detach") == 0
    assert state.load_attachment() is None
    assert await asyncio.to_thread(cli, "run", "--once") == 1  # not attached


def test_bad_usage_and_host_detection() -> None:
    with pytest.raises(SystemExit) as info:
        main(["attach", "http://x", "--runtimes", "kubernetes"])
    assert info.value.code == 2
    host = detect_host("n", ["process", "docker"])
    assert host.cpus >= 1
    assert host.memory_mb >= 64
    assert host.runtimes == ["process", "docker"]


def test_the_default_host_name_is_anonymous() -> None:
    names = {detect_host(None, ["process"]).name for _ in range(5)}
    assert all(re.fullmatch(r"host-[0-9a-f]{6}", n) for n in names), names
    assert len(names) > 1  # random, not derived from the computer
    assert socket.gethostname() not in names
    assert detect_host("my-pc", ["process"]).name == "my-pc"  # --name: private, by choice


async def test_attach_with_a_public_name(
    fake_server: FakeWorkServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = str(tmp_path / "client")
    argv = ["--state-dir", state_dir, "attach", fake_server.url, "--public-name", "  Ada L.  "]
    assert await asyncio.to_thread(main, argv) == 0
    (sent,) = fake_server.registered
    assert sent.display_name == "Ada L."  # trimmed, as the server stores it
    assert re.fullmatch(r"host-[0-9a-f]{6}", sent.name)  # the private name stays anonymous
    assert "public name 'Ada L.'" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["", "   ", "x" * 65, "<b>me</b>", "a&amp;b", "tab\there"])
def test_a_bad_public_name_is_refused_before_attaching(
    bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--state-dir", str(tmp_path), "attach", "http://x", "--public-name", bad])
    assert info.value.code == 2
    assert "invalid public name" in capsys.readouterr().err
    assert detect_host(None, ["process"]).display_name is None  # anonymous by default


def test_run_has_no_fault_or_attack_switches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = capsys.readouterr().out.lower()
    assert "--executor" in help_text
    assert "--fault" not in help_text
    assert "attack" not in help_text
    assert "testing only" not in help_text
    assert "inject" not in help_text
    with pytest.raises(SystemExit) as info:
        main(["run", "--faults", "crash:0.3"])
    assert info.value.code == 2
