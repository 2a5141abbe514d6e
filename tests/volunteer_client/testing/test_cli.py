"""``python -m volunteer_client.testing``: yadml-client plus the fault and attack switches."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from volunteer_client.executor_table import build_executor
from volunteer_client.state import StateDir
from volunteer_client.testing.cli import build_parser, inject, main
from volunteer_client.testing.faults import AttackSpec, FaultyExecutor

from ..fake_server import FakeWorkServer

REPO = Path(__file__).resolve().parents[3]


def test_run_takes_the_injection_switches(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["run", "--faults", "crash:0.3,late:0.1", "--attack", "noise:0.5", "--fault-seed", "7"]
    )
    assert args.faults == {"crash": 0.3, "late": 0.1}
    assert args.attack == AttackSpec("noise", 0.5)
    executor = build_executor("process", tmp_path, args)
    wrapped = inject(executor, args)
    assert isinstance(wrapped, FaultyExecutor)
    assert wrapped.inner is executor
    assert wrapped.runtime == "process"
    plain = build_parser().parse_args(["run", "--fault-seed", "7"])
    assert inject(executor, plain) is executor  # nothing asked: the executor itself


def test_bad_specs_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["run", "--faults", "crash:2"], ["run", "--attack", "meteor"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert "unknown attack" in capsys.readouterr().err


def test_module_entry_point_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "volunteer_client.testing", "run", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "python -m volunteer_client.testing" in out
    assert "--faults" in out
    assert "--attack" in out
    assert "--executor" in out


async def test_run_once_with_injection(fake_server: FakeWorkServer, tmp_path: Path) -> None:
    state_dir = str(tmp_path / "client")

    def cli(*args: str) -> int:
        return main(["--state-dir", state_dir, *args])

    assert await asyncio.to_thread(cli, "attach", fake_server.url) == 0
    assert StateDir(Path(state_dir)).require_attachment().runtimes == ["process"]
    code = await asyncio.to_thread(
        cli, "run", "--once", "--cold", "--faults", "vanish:0.0", "--fault-seed", "1"
    )
    assert code == 0
    assert len(fake_server.work_requests) == 1
