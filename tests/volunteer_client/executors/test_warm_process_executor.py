"""``ProcessExecutor(warm=True)``: the real trainer loop and the real trainer, unit after unit."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import safetensors.torch
import torch

from tests.volunteer_client.executors.processes import pid_gone
from volunteer_client.errors import ExecutionFailed
from volunteer_client.executors import ExecutionRequest, ProcessExecutor, ProcessOptions
from yadml_common.wire import SHARD_IMAGES, SHARD_LABELS, TaskConfig
from yadml_trainer.models import initial_state

pytestmark = pytest.mark.slow


def _request(
    root: Path, name: str, *, samples: int = 64, epochs: int = 1, timeout_s: float = 120.0
) -> ExecutionRequest:
    work = root / name
    (work / "inputs").mkdir(parents=True)
    generator = torch.Generator().manual_seed(samples)
    images = torch.randint(0, 256, (samples, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.arange(samples, dtype=torch.int64) % 10
    shard, weights = work / "inputs" / "shard", work / "inputs" / "weights"
    safetensors.torch.save_file({SHARD_IMAGES: images, SHARD_LABELS: labels}, str(shard))
    safetensors.torch.save_file(initial_state("lenet", 0), str(weights))
    return ExecutionRequest(
        work_dir=work,
        shard_path=shard,
        weights_path=weights,
        task=TaskConfig(seed=3, local_epochs=epochs),
        output_path=work / "output.safetensors",
        timeout_s=timeout_s,
        threads=1,
        progress_path=work / "progress",
    )


@pytest.fixture
async def warm(tmp_path: Path) -> AsyncIterator[ProcessExecutor]:
    executor = ProcessExecutor(
        ProcessOptions(warm=True, spool_dir=tmp_path / "spool", kill_grace_s=0.5)
    )
    try:
        yield executor
    finally:
        await executor.aclose()


async def _wait_for(predicate: object, within: float = 60.0) -> None:
    assert callable(predicate)
    end = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < end, "timed out waiting"
        await asyncio.sleep(0.05)


async def test_units_run_in_one_long_lived_process(tmp_path: Path, warm: ProcessExecutor) -> None:
    first = await warm.run(_request(tmp_path, "a"))
    [pid] = warm.warm_pids()
    second = await warm.run(_request(tmp_path, "b", samples=32))
    assert warm.warm_pids() == [pid]
    for result in (first, second):
        assert result.output_path.is_file()
        assert '"samples"' in result.log_tail  # the trainer's report, from the unit's log
    # a unit with bad input fails alone; the process stays for the next one
    bad = _request(tmp_path, "bad")
    bad.shard_path.write_bytes(b"not safetensors")
    with pytest.raises(ExecutionFailed) as info:
        await warm.run(bad)
    assert info.value.reason == "invalid_input"
    assert warm.warm_pids() == [pid]
    await warm.aclose()
    await _wait_for(lambda: pid_gone(pid), within=5.0)
    assert not any((tmp_path / "spool").iterdir())


async def test_same_weights_as_a_fresh_process(tmp_path: Path, warm: ProcessExecutor) -> None:
    await warm.run(_request(tmp_path, "warmup", samples=48))  # leaves state behind, if any
    hot = await warm.run(_request(tmp_path, "hot"))
    cold = await ProcessExecutor().run(_request(tmp_path, "cold"))
    a = safetensors.torch.load_file(str(hot.output_path))
    b = safetensors.torch.load_file(str(cold.output_path))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


async def test_a_killed_process_fails_its_unit_and_is_replaced(
    tmp_path: Path, warm: ProcessExecutor
) -> None:
    await warm.run(_request(tmp_path, "a"))
    [pid] = warm.warm_pids()
    slow = _request(tmp_path, "slow", samples=4000, epochs=50)
    task = asyncio.create_task(warm.run(slow))
    assert slow.progress_path is not None
    progress = slow.progress_path
    await _wait_for(lambda: progress.is_file())
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ExecutionFailed) as info:
        await task
    assert info.value.reason == "crash"
    assert "SIGKILL" in info.value.detail
    assert warm.warm_pids() == []
    result = await warm.run(_request(tmp_path, "after"))
    assert result.output_path.is_file()
    [new_pid] = warm.warm_pids()
    assert new_pid != pid


async def test_a_process_dead_while_idle_is_replaced(tmp_path: Path, warm: ProcessExecutor) -> None:
    await warm.run(_request(tmp_path, "a"))
    [pid] = warm.warm_pids()
    os.kill(pid, signal.SIGKILL)
    await _wait_for(lambda: warm.warm_pids() == [], within=5.0)
    assert (await warm.run(_request(tmp_path, "b"))).output_path.is_file()
    assert warm.warm_pids() not in ([], [pid])


async def test_time_limit_kills_the_process(tmp_path: Path, warm: ProcessExecutor) -> None:
    await warm.run(_request(tmp_path, "a"))
    [pid] = warm.warm_pids()
    started = time.monotonic()
    with pytest.raises(ExecutionFailed) as info:
        await warm.run(_request(tmp_path, "slow", samples=4000, epochs=50, timeout_s=1.0))
    assert info.value.reason == "timeout"
    assert time.monotonic() - started < 10
    await _wait_for(lambda: pid_gone(pid), within=5.0)
    assert warm.warm_pids() == []
    assert (await warm.run(_request(tmp_path, "b"))).output_path.is_file()


async def test_cancellation_kills_the_process(tmp_path: Path, warm: ProcessExecutor) -> None:
    slow = _request(tmp_path, "slow", samples=4000, epochs=50)
    task = asyncio.create_task(warm.run(slow))
    assert slow.progress_path is not None
    progress = slow.progress_path
    await _wait_for(lambda: progress.is_file())
    [pid] = warm.warm_pids()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _wait_for(lambda: pid_gone(pid), within=5.0)
    assert warm.warm_pids() == []


async def test_a_loop_that_cannot_start_is_a_crash(tmp_path: Path) -> None:
    executor = ProcessExecutor(
        ProcessOptions(warm=True, spool_dir=tmp_path / "spool"),
        loop_module="volunteer_client.no_such_loop",
    )
    with pytest.raises(ExecutionFailed) as info:
        await executor.run(_request(tmp_path, "a"))
    assert info.value.reason == "crash"
    assert "no_such_loop" in info.value.detail
    await executor.aclose()


async def test_leftover_spools_are_removed(tmp_path: Path) -> None:
    leftover = tmp_path / "spool" / "w-old"
    leftover.mkdir(parents=True)
    (leftover / "ready").write_text("1\n")
    executor = ProcessExecutor(ProcessOptions(warm=True, spool_dir=tmp_path / "spool"))
    try:
        await executor.run(_request(tmp_path, "a"))
        assert not leftover.exists()
    finally:
        await executor.aclose()
