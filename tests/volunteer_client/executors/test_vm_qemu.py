"""The VM executor's QEMU driver for real: the VM image of ``make vm-image`` under TCG.

Each boot emulates the CPU (KVM is not usable on the CI machine), so a unit here is a
small ``digits`` shard. Locally these tests skip when QEMU or the image is missing; under
``CI=true`` they fail instead (:func:`tests.requirements.require`).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from tests.requirements import require
from tests.volunteer_client.executors.conftest import make_request
from volunteer_client.errors import ExecutionFailed
from volunteer_client.executors.base import ExecutionRequest
from volunteer_client.executors.process_executor import ProcessExecutor
from volunteer_client.executors.vm import QemuDriver, VmExecutor, VmImageStore, VmOptions, vm_prefix
from work_server.ml.datasets import load_dataset
from yadml_common.wire import REPORT_METADATA_KEY, SHARD_IMAGES, SHARD_LABELS

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def qemu_ready() -> None:
    driver = QemuDriver(prefix="yadml-vm-probe-")
    ok, why = driver.usable()
    require(ok, f"{why}; run `make vm-image`")
    try:
        VmImageStore().find(None, "qcow2")
    except ExecutionFailed as exc:
        require(False, exc.detail)


def _digits_request(root: Path, *, samples: int, timeout_s: float | None) -> ExecutionRequest:
    """A unit on the first ``samples`` digits (LeNet, one epoch), laid out as the daemon does."""
    request = make_request(root, samples=8, timeout_s=timeout_s)
    digits = load_dataset("digits")
    images = torch.from_numpy(np.ascontiguousarray(digits.train_images[:samples]))
    labels = torch.from_numpy(np.ascontiguousarray(digits.train_labels[:samples]))
    safetensors.torch.save_file({SHARD_IMAGES: images, SHARD_LABELS: labels}, request.shard_path)
    return request


def _qemu_processes(prefix: str) -> list[int]:
    return QemuDriver(prefix=prefix)._orphans()


async def test_digits_unit_matches_the_process_executor(tmp_path: Path, qemu_ready: None) -> None:
    expected = _digits_request(tmp_path / "process", samples=96, timeout_s=None)
    await ProcessExecutor().run(expected)
    request = _digits_request(tmp_path / "vm", samples=96, timeout_s=600)
    executor = VmExecutor(
        VmOptions(
            driver="qemu", client_id="test-same", spool_dir=tmp_path / "spool", memory_mb=1024
        )
    )
    result = await executor.run(request)
    got = safetensors.torch.load_file(str(result.output_path))
    want = safetensors.torch.load_file(str(expected.output_path))
    assert got.keys() == want.keys()
    for name in want:
        # The guest's emulated CPU may pick other SIMD kernels than the host: a tolerance.
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-5, msg=name)
    with safetensors.safe_open(str(result.output_path), "pt") as f:
        assert REPORT_METADATA_KEY in (f.metadata() or {})
    assert request.progress_path is not None
    assert float(request.progress_path.read_text()) == 1.0
    assert 0 < executor.last_timings["ready_s"] < executor.last_timings["total_s"]
    assert list((tmp_path / "spool").iterdir()) == []
    assert _qemu_processes(vm_prefix("test-same")) == []


async def test_time_limit_leaves_no_process_overlay_or_file(
    tmp_path: Path, qemu_ready: None
) -> None:
    request = _digits_request(tmp_path / "vm", samples=64, timeout_s=4.0)
    spool = tmp_path / "spool"
    executor = VmExecutor(
        VmOptions(driver="qemu", client_id="test-limit", spool_dir=spool, memory_mb=512)
    )
    base = VmImageStore().find(None, "qcow2").path
    before = base.stat().st_mtime_ns
    started = time.monotonic()
    with pytest.raises(ExecutionFailed) as info:
        await executor.run(request)
    assert info.value.reason == "timeout"
    assert time.monotonic() - started < 60
    assert _qemu_processes(vm_prefix("test-limit")) == []
    assert list(spool.iterdir()) == []  # no overlay, no disks, no logs
    assert not request.output_path.exists()
    assert base.stat().st_mtime_ns == before  # the shared base image was never written


async def test_cancelled_unit_leaves_no_process_or_file(tmp_path: Path, qemu_ready: None) -> None:
    request = _digits_request(tmp_path / "vm", samples=64, timeout_s=600)
    spool = tmp_path / "spool"
    executor = VmExecutor(
        VmOptions(driver="qemu", client_id="test-cancel", spool_dir=spool, memory_mb=512)
    )
    task = asyncio.create_task(executor.run(request))
    for _ in range(300):  # until the VM runs
        if _qemu_processes(vm_prefix("test-cancel")):
            break
        await asyncio.sleep(0.1)
    assert _qemu_processes(vm_prefix("test-cancel")), "the VM never started"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _qemu_processes(vm_prefix("test-cancel")) == []
    assert list(spool.iterdir()) == []


async def test_restarted_client_kills_its_orphaned_vms(tmp_path: Path, qemu_ready: None) -> None:
    prefix = vm_prefix("test-orphan")
    spool = tmp_path / "spool"
    leftover = spool / f"{prefix}3-abcdef"
    leftover.mkdir(parents=True)
    (leftover / f"{prefix}3-abcdef.qcow2").write_bytes(b"overlay")
    (spool / "someone-else").mkdir()
    # A VM a killed client left running (paused here: it needs no disk).
    orphan = await asyncio.create_subprocess_exec(
        "qemu-system-x86_64", "-name", f"{prefix}3-abcdef", "-accel", "tcg", "-m", "64",
        "-nodefaults", "-display", "none", "-S", "-nic", "none",
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(50):
            if _qemu_processes(prefix):
                break
            await asyncio.sleep(0.1)
        executor = VmExecutor(VmOptions(driver="qemu", client_id="test-orphan", spool_dir=spool))
        assert await asyncio.to_thread(executor.cleanup) == 2
        assert await asyncio.wait_for(orphan.wait(), 10) != 0
        assert _qemu_processes(prefix) == []
        assert sorted(p.name for p in spool.iterdir()) == ["someone-else"]
    finally:
        if orphan.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                orphan.kill()
            await orphan.wait()


def test_image_manifest_matches_its_files(qemu_ready: None) -> None:
    image = VmImageStore().find(None, "qcow2")
    assert image.id == f"yadml-vm@sha256:{image.manifest['raw_sha256']}"
    assert VmImageStore().find(image.id, "vdi").path.suffix == ".vdi"
    assert image.bytes < 1 << 30  # the origin's VirtualBox route: about 5 GB
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(image.path)],
        capture_output=True, check=True, text=True,
    )  # fmt: skip
    assert '"backing-filename"' not in info.stdout  # a standalone base, not an overlay
    assert sys.platform == "linux"
