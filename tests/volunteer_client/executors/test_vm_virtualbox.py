"""The VirtualBox driver against a RECORDED FAKE ``VBoxManage`` (``fake_vboxmanage.py``).

VirtualBox cannot run on the test machine (it is not in Debian). The fake records each
argv and answers in VBoxManage's formats; in ``train`` mode it plays the guest by running
the real trainer natively. These tests pin the exact command sequence the driver sends: the
manual check against a real VirtualBox is in ``images/vm/README.md``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

from tests.volunteer_client.executors.conftest import make_request
from volunteer_client.errors import ExecutionFailed
from volunteer_client.executors.process_executor import ProcessExecutor
from volunteer_client.executors.vm import VirtualBoxDriver, VmExecutor, VmOptions, vm_prefix
from volunteer_client.executors.vm.virtualbox import parse_list_vms, parse_machinereadable
from yadml_trainer.version import trainer_version

pytestmark = pytest.mark.timeout(120)

FAKE = Path(__file__).with_name("fake_vboxmanage.py")
CLIENT = "c0ffee0123456789"


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake's state directory; ``calls.jsonl`` holds what the driver ran."""
    state = tmp_path / "fake-vbox"
    state.mkdir()
    monkeypatch.setenv("FAKE_VBOX_DIR", str(state))
    return state


def _image_dir(root: Path) -> Path:
    """A manifest and a base "VDI" (the fake's disks are plain files)."""
    images = root / "images"
    images.mkdir()
    base = images / "yadml-vm-test.vdi"
    base.write_bytes(b"fake base disk\n" * 100)
    digest = hashlib.sha256(base.read_bytes()).hexdigest()
    raw = hashlib.sha256(b"raw disk").hexdigest()
    manifest = {
        "id": f"yadml-vm@sha256:{raw}",
        "raw_sha256": raw,
        "trainer_version": trainer_version(),
        "files": {"vdi": {"path": base.name, "bytes": base.stat().st_size, "sha256": digest}},
    }
    (images / "manifest.json").write_text(json.dumps(manifest))
    return images


def _executor(root: Path, *, poll_s: float = 0.05) -> VmExecutor:
    driver = VirtualBoxDriver(
        prefix=vm_prefix(CLIENT), vboxmanage=[sys.executable, str(FAKE)], poll_s=poll_s
    )
    return VmExecutor(
        VmOptions(client_id=CLIENT, image_dir=_image_dir(root), spool_dir=root / "spool"),
        driver=driver,
    )


def _calls(fake: Path, root: Path) -> list[list[str]]:
    """The recorded argv lists, with the temp dir and the VM's name made stable."""
    vm_name = re.compile(re.escape(vm_prefix(CLIENT)) + r"[0-9a-z]+-[0-9a-f]{6}")
    calls = [json.loads(line) for line in (fake / "calls.jsonl").read_text().splitlines()]
    return [
        [vm_name.sub("<vm>", arg.replace(str(root), "<tmp>")) for arg in argv] for argv in calls
    ]


def _unit_commands(timeout: bool) -> list[list[str]]:
    """What one unit runs, from base registration to teardown."""
    run = "<tmp>/spool/<vm>"
    base = "<tmp>/images/yadml-vm-test.vdi"
    vbox = f"{run}/vbox"
    end = (
        [["showvminfo", "<vm>", "--machinereadable"],
         ["controlvm", "<vm>", "poweroff"]]
        if timeout else
        [["clonemedium", "disk", f"{vbox}/<vm>-output.vdi", f"{run}/output.raw.out",
          "--format", "RAW"],
         ["showvminfo", "<vm>", "--machinereadable"]]
    )  # fmt: skip
    return [
        ["showmediuminfo", "disk", base],
        ["modifymedium", "disk", base, "--type", "multiattach"],
        ["createvm", "--name", "<vm>", "--ostype", "Linux_64", "--basefolder", vbox,
         "--register"],
        ["modifyvm", "<vm>", "--memory", "1024", "--cpus", "1", "--nic1", "none",
         "--acpi", "on", "--ioapic", "on", "--boot1", "disk", "--boot2", "none",
         "--boot3", "none", "--boot4", "none",
         "--uart1", "0x3F8", "4", "--uartmode1", "file", f"{run}/console.log",
         "--uart2", "0x2F8", "3", "--uartmode2", "file", f"{run}/status.log"],
        ["storagectl", "<vm>", "--name", "SATA", "--add", "sata", "--controller", "IntelAhci",
         "--portcount", "3", "--bootable", "on"],
        ["createmedium", "disk", "--filename", f"{vbox}/<vm>-root.vdi",
         "--diffparent", base, "--format", "VDI"],
        ["convertfromraw", f"{run}/input.tar", f"{vbox}/<vm>-input.vdi", "--format", "VDI"],
        ["createmedium", "disk", "--filename", f"{vbox}/<vm>-output.vdi",
         "--sizebyte", "9437184", "--format", "VDI"],
        *[["storageattach", "<vm>", "--storagectl", "SATA", "--port", str(port),
           "--device", "0", "--type", "hdd", "--medium", f"{vbox}/<vm>-{disk}.vdi"]
          for port, disk in enumerate(("root", "input", "output"))],
        ["startvm", "<vm>", "--type", "headless"],
        ["showvminfo", "<vm>", "--machinereadable"],
        *end,
        ["unregistervm", "<vm>", "--delete"],
    ]  # fmt: skip


def _registered(fake: Path) -> tuple[list[str], list[str]]:
    state = json.loads((fake / "state.json").read_text())
    return sorted(state["vms"]), sorted(state["media"])


async def test_unit_runs_and_everything_is_unregistered(tmp_path: Path, fake: Path) -> None:
    expected_req = make_request(tmp_path / "process", samples=200)
    await ProcessExecutor().run(expected_req)
    request = make_request(tmp_path / "vm", samples=200)
    executor = _executor(tmp_path)
    executor.memory_mb = 1024
    result = await executor.run(request)
    assert result.output_path == request.output_path
    got = safetensors.torch.load_file(str(request.output_path))
    want = safetensors.torch.load_file(str(expected_req.output_path))
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6)
    assert request.progress_path is not None
    assert request.progress_path.read_text() == "1.0\n"
    assert executor.last_timings["total_s"] > 0
    assert _calls(fake, tmp_path) == [["--version"], ["list", "vms"], *_unit_commands(False)]
    vms, media = _registered(fake)
    assert vms == []
    assert media == [str(tmp_path / "images" / "yadml-vm-test.vdi")]
    assert list((tmp_path / "spool").iterdir()) == []


async def test_timeout_powers_off_unregisters_and_deletes_the_differencing_disk(
    tmp_path: Path, fake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VBOX_GUEST", "hang")
    request = make_request(tmp_path / "vm", samples=64, timeout_s=0.5)
    executor = _executor(tmp_path)
    executor.memory_mb = 1024
    with pytest.raises(ExecutionFailed) as info:
        await executor.run(request)
    assert info.value.reason == "timeout"
    calls = _calls(fake, tmp_path)
    polls = [c for c in calls if c[0] == "showvminfo"]
    assert len(polls) >= 2  # asked until the limit, then once more before powering off
    unit = _unit_commands(True)
    assert calls[: 2 + len(unit) - 3] == [["--version"], ["list", "vms"], *unit[:-3]]
    assert calls[-3:] == unit[-3:]
    vms, media = _registered(fake)
    assert vms == []
    assert media == [str(tmp_path / "images" / "yadml-vm-test.vdi")]
    assert not request.output_path.exists()
    assert list((tmp_path / "spool").iterdir()) == []  # the differencing disk went with it


def test_restarted_client_removes_its_orphaned_vms_by_prefix(tmp_path: Path, fake: Path) -> None:
    prefix = vm_prefix(CLIENT)
    state = {
        "vms": {
            f"{prefix}7-abc123": {"uuid": "0b7a1f3e-2c4d-4e5f-8a9b-0c1d2e3f4a5b",
                                  "state": "running", "disks": {}},
            f"{prefix}8-def456": {"uuid": "1b7a1f3e-2c4d-4e5f-8a9b-0c1d2e3f4a5b",
                                  "state": "poweroff", "disks": {}},
            "yadml-vm-someoneelse00000-1-aaaaaa": {
                "uuid": "2b7a1f3e-2c4d-4e5f-8a9b-0c1d2e3f4a5b", "state": "running", "disks": {}},
            "my own vm": {"uuid": "3b7a1f3e-2c4d-4e5f-8a9b-0c1d2e3f4a5b",
                          "state": "running", "disks": {}},
        },
        "media": {},
    }  # fmt: skip
    (fake / "state.json").write_text(json.dumps(state))
    spool = tmp_path / "spool"
    (spool / f"{prefix}7-abc123" / "vbox").mkdir(parents=True)
    (spool / f"{prefix}7-abc123" / "vbox" / f"{prefix}7-abc123-root.vdi").write_bytes(b"x")
    (spool / "unrelated").mkdir()
    executor = _executor(tmp_path)
    assert executor.cleanup() == 3  # two VMs and one run directory
    assert _calls(fake, tmp_path) == [
        ["list", "vms"],
        ["controlvm", "0b7a1f3e-2c4d-4e5f-8a9b-0c1d2e3f4a5b", "poweroff"],
        ["unregistervm", "0b7a1f3e-2c4d-4e5f-8a9b-0c1d2e3f4a5b", "--delete"],
        ["controlvm", "1b7a1f3e-2c4d-4e5f-8a9b-0c1d2e3f4a5b", "poweroff"],
        ["unregistervm", "1b7a1f3e-2c4d-4e5f-8a9b-0c1d2e3f4a5b", "--delete"],
    ]
    vms, _ = _registered(fake)
    assert vms == ["my own vm", "yadml-vm-someoneelse00000-1-aaaaaa"]
    assert sorted(p.name for p in spool.iterdir()) == ["unrelated"]


async def test_missing_vboxmanage_is_an_executor_error(tmp_path: Path) -> None:
    driver = VirtualBoxDriver(prefix=vm_prefix(CLIENT), vboxmanage=[str(tmp_path / "nothing")])
    ok, why = driver.usable()
    assert not ok
    assert "VBoxManage" in why
    executor = VmExecutor(
        VmOptions(client_id=CLIENT, image_dir=_image_dir(tmp_path)), driver=driver
    )
    with pytest.raises(ExecutionFailed) as info:
        await executor.run(make_request(tmp_path / "vm", samples=8))
    assert info.value.reason == "executor_error"


def test_parsers() -> None:
    listed = (
        '"yadml-vm-a-1" {0b7a1f3e-2c4d-4e5f-8a9b-0c1d2e3f4a5b}\n'
        '"other" {11111111-2222-3333-4444-555555555555}\n'
    )
    assert parse_list_vms(listed) == [
        ("yadml-vm-a-1", "0b7a1f3e-2c4d-4e5f-8a9b-0c1d2e3f4a5b"),
        ("other", "11111111-2222-3333-4444-555555555555"),
    ]
    assert parse_machinereadable('name="x"\nVMState="poweroff"\ncpus=2\n') == {
        "name": "x",
        "VMState": "poweroff",
        "cpus": "2",
    }
