"""The runtime -> executor table: ``yadml-client run``'s options become each executor's options."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from volunteer_client.cli import _usable_runtimes, build_parser
from volunteer_client.executor_table import EXECUTORS, build_executor, client_id_for
from volunteer_client.executors import (
    DockerExecutor,
    DockerOptions,
    ProcessExecutor,
    ProcessOptions,
    VmExecutor,
)
from yadml_common.wire import RUNTIMES


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


def test_every_runtime_has_an_executor_and_the_cli_offers_them_all() -> None:
    assert set(EXECUTORS) == set(RUNTIMES)
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["run", "--executor", "kubernetes"])
    assert info.value.code == 2
    for runtime in RUNTIMES:
        args = build_parser().parse_args(["run", "--executor", runtime])
        assert args.executor == runtime


def test_process_executor_is_warm_unless_cold(tmp_path: Path) -> None:
    executor = build_executor("process", tmp_path, _args())
    assert isinstance(executor, ProcessExecutor)
    assert executor.options == ProcessOptions(warm=True, spool_dir=tmp_path / "warm")
    executor = build_executor("process", tmp_path, _args("--cold"))
    assert isinstance(executor, ProcessExecutor)
    assert not executor.options.warm


def test_docker_options_come_from_the_volunteers_limits(tmp_path: Path) -> None:
    args = _args(
        "--executor", "docker", "--docker-image", "img", "--docker-runtime", "runsc",
        "--memory-mb", "512", "--cpus", "1.5", "--pids-limit", "64", "--cold",
    )  # fmt: skip
    executor = build_executor("docker", tmp_path, args)
    assert isinstance(executor, DockerExecutor)
    assert executor.options == DockerOptions(
        image="img",
        client_id=client_id_for(tmp_path),
        memory_mb=512,
        cpus=1.5,
        pids_limit=64,
        runtime="runsc",
        warm=False,
        spool_dir=tmp_path / "docker",
    )
    hardening = executor.engine.hardening(threads=2)
    assert hardening["network_mode"] == "none"
    assert hardening["read_only"] is True
    assert hardening["cap_drop"] == ["ALL"]
    assert hardening["runtime"] == "runsc"
    assert hardening["mem_limit"] == hardening["memswap_limit"] == "512m"
    assert hardening["nano_cpus"] == 1_500_000_000
    assert hardening["pids_limit"] == 64
    assert hardening["environment"]["OMP_NUM_THREADS"] == "2"


def test_vm_cpus_are_whole(tmp_path: Path) -> None:
    executor = build_executor("vm", tmp_path, _args("--executor", "vm", "--cpus", "0.4"))
    assert isinstance(executor, VmExecutor)
    assert executor.cpus == 1


def test_client_id_is_stable_per_state_dir(tmp_path: Path) -> None:
    assert client_id_for(tmp_path) == client_id_for(tmp_path / "." / "")
    assert client_id_for(tmp_path) != client_id_for(tmp_path / "other")
    assert len(client_id_for(tmp_path)) == 16


def test_runtimes_without_a_probe_are_always_usable() -> None:
    assert [r for r in RUNTIMES if EXECUTORS[r].probe is not None] == ["vm"]
    assert _usable_runtimes(["process", "docker"]) == ["process", "docker"]
