"""The client advertises the vm runtime only where a VM driver is usable."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.requirements import require
from volunteer_client.cli import _usable_runtimes, build_parser
from volunteer_client.errors import ExecutionFailed
from volunteer_client.executor_table import build_executor
from volunteer_client.executors.vm import QemuDriver, VmExecutor, VmOptions


def test_vm_is_not_advertised_without_a_hypervisor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-system-x86_64, no VBoxManage
    assert _usable_runtimes(["process", "vm"]) == ["process"]
    assert "not advertising the vm runtime" in capsys.readouterr().err
    with pytest.raises(ExecutionFailed) as info:
        _usable_runtimes(["vm"])
    assert info.value.reason == "executor_error"
    assert "qemu" in info.value.detail
    assert "virtualbox" in info.value.detail
    assert _usable_runtimes(["process", "docker"]) == ["process", "docker"]


def test_vm_is_advertised_where_qemu_runs() -> None:
    require(shutil.which("qemu-system-x86_64") is not None, "QEMU missing: `make vm-image`")
    assert _usable_runtimes(["process", "vm"]) == ["process", "vm"]


def test_run_options_make_a_vm_executor(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["run", "--executor", "vm", "--vm-driver", "qemu", "--memory-mb", "768", "--cpus", "2",
         "--vm-image-dir", str(tmp_path / "images")]
    )  # fmt: skip
    executor = build_executor("vm", tmp_path / "state", args)
    assert isinstance(executor, VmExecutor)
    assert (executor.memory_mb, executor.cpus) == (768, 2)
    assert executor.images.root == tmp_path / "images"
    assert executor.spool_dir == tmp_path / "state" / "vm"
    assert executor.driver.name == "qemu"
    assert executor.prefix.startswith("yadml-vm-")


async def test_run_stops_when_the_vm_driver_is_not_usable(tmp_path: Path) -> None:
    driver = QemuDriver(prefix="yadml-vm-x-", qemu=[str(tmp_path / "no-qemu")])
    executor = VmExecutor(VmOptions(spool_dir=tmp_path / "spool"), driver=driver)
    with pytest.raises(ExecutionFailed) as info:
        await executor.prepare()
    assert info.value.reason == "executor_error"
    assert "qemu" in info.value.detail
