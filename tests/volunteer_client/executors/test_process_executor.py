from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.volunteer_client.executors.processes import pid_gone
from volunteer_client.errors import ExecutionFailed
from volunteer_client.executors import ExecutionRequest, ProcessExecutor, ProcessOptions
from yadml_common.wire import TaskConfig

REPO = str(Path(__file__).resolve().parents[3])
FAKE = "tests.volunteer_client.fake_trainer"


def _executor(**env: str) -> ProcessExecutor:
    return ProcessExecutor(
        ProcessOptions(kill_grace_s=0.5), module=FAKE, pythonpath=[REPO], env=env
    )


def _request(tmp_path: Path, *, timeout_s: float | None = 20.0) -> ExecutionRequest:
    work = tmp_path / "unit"
    (work / "inputs").mkdir(parents=True)
    (work / "inputs" / "shard").write_bytes(b"shard")
    (work / "inputs" / "weights").write_bytes(b"weights")
    return ExecutionRequest(
        work_dir=work,
        shard_path=work / "inputs" / "shard",
        weights_path=work / "inputs" / "weights",
        task=TaskConfig(seed=42),
        output_path=work / "output.safetensors",
        timeout_s=timeout_s,
        threads=3,
        progress_path=work / "progress",
    )


def _wait_gone(pid: int, within: float = 3.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if pid_gone(pid):
            return True
        time.sleep(0.02)
    return pid_gone(pid)


async def test_success_writes_task_and_output(tmp_path: Path) -> None:
    request = _request(tmp_path)
    result = await _executor(FAKE_TRAINER_STDERR="hello\n").run(request)
    assert result.output_path.read_bytes() == b"weights"
    assert request.progress_path is not None
    assert request.progress_path.read_text() == "1.0"
    assert TaskConfig.model_validate_json((request.work_dir / "task.json").read_text()).seed == 42
    assert "hello" in result.log_tail
    assert "threads=3 omp=3" in result.log_tail
    assert "seed=42" in result.log_tail
    assert result.elapsed_s > 0


@pytest.mark.parametrize(
    ("env", "reason", "text"),
    [
        ({"FAKE_TRAINER_EXIT": "2", "FAKE_TRAINER_STDERR": "bad shard\n"}, "invalid_input", "bad"),
        ({"FAKE_TRAINER_EXIT": "1", "FAKE_TRAINER_STDERR": "boom\n"}, "crash", "exit status 1"),
        ({"FAKE_TRAINER_EXIT": "1", "FAKE_TRAINER_STDERR": "MemoryError\n"}, "out_of_memory", ""),
        ({"FAKE_TRAINER_NO_OUTPUT": "1"}, "crash", "no output"),
    ],
)
async def test_exit_status_mapping(
    tmp_path: Path, env: dict[str, str], reason: str, text: str
) -> None:
    with pytest.raises(ExecutionFailed) as info:
        await _executor(**env).run(_request(tmp_path))
    assert info.value.reason == reason
    assert text in info.value.detail


async def test_log_tail_keeps_the_last_4_kib(tmp_path: Path) -> None:
    noise = "".join(f"line {i:05d}\n" for i in range(2000))
    with pytest.raises(ExecutionFailed) as info:
        await _executor(FAKE_TRAINER_EXIT="1", FAKE_TRAINER_STDERR=noise).run(_request(tmp_path))
    tail = info.value.detail
    assert "line 01999" in tail
    assert "line 00000" not in tail
    assert len(tail.encode()) <= 4096 + 100


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    executor = _executor(
        FAKE_TRAINER_SLEEP="30",
        FAKE_TRAINER_CHILD_PIDFILE=str(pidfile),
        FAKE_TRAINER_IGNORE_TERM="1",
    )
    started = time.monotonic()
    with pytest.raises(ExecutionFailed) as info:
        await executor.run(_request(tmp_path, timeout_s=1.0))
    assert info.value.reason == "timeout"
    assert time.monotonic() - started < 10
    trainer_pid, child_pid = map(int, pidfile.read_text().split())
    assert _wait_gone(trainer_pid)  # ignored SIGTERM, got SIGKILL
    assert _wait_gone(child_pid)  # the grandchild went with the group


async def test_cancellation_kills_the_child_and_reraises(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    executor = _executor(FAKE_TRAINER_SLEEP="30", FAKE_TRAINER_CHILD_PIDFILE=str(pidfile))
    task = asyncio.create_task(executor.run(_request(tmp_path)))
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text():
            break
        await asyncio.sleep(0.025)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    trainer_pid, child_pid = map(int, pidfile.read_text().split())
    assert _wait_gone(trainer_pid)
    assert _wait_gone(child_pid)


async def test_missing_interpreter_is_an_executor_error(tmp_path: Path) -> None:
    executor = ProcessExecutor(module=FAKE, python=str(tmp_path / "no-python"))
    with pytest.raises(ExecutionFailed) as info:
        await executor.run(_request(tmp_path))
    assert info.value.reason == "executor_error"


def test_defaults() -> None:
    executor = ProcessExecutor()
    assert executor.module == "yadml_trainer.trainer"
    assert executor.options == ProcessOptions(warm=False, spool_dir=None, kill_grace_s=2.0)


def test_environment_sets_thread_variables(tmp_path: Path) -> None:
    env = _executor().environment(_request(tmp_path))
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == REPO


@pytest.mark.slow
async def test_real_trainer_on_a_tiny_shard(tmp_path: Path) -> None:
    import safetensors.torch
    import torch

    from yadml_common.wire import SHARD_IMAGES, SHARD_LABELS
    from yadml_trainer.models import initial_state

    request = _request(tmp_path)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.arange(16, dtype=torch.int64) % 10
    safetensors.torch.save_file(
        {SHARD_IMAGES: images, SHARD_LABELS: labels}, str(request.shard_path)
    )
    safetensors.torch.save_file(initial_state("lenet", 0), str(request.weights_path))
    result = await ProcessExecutor().run(request)
    trained = safetensors.torch.load_file(str(result.output_path))
    assert trained.keys() == initial_state("lenet", 0).keys()
    assert request.progress_path is not None
    assert float(request.progress_path.read_text()) == 1.0

    request.shard_path.write_bytes(b"not safetensors")
    with pytest.raises(ExecutionFailed) as info:
        await ProcessExecutor().run(request)
    assert info.value.reason == "invalid_input"
