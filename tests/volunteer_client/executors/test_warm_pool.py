"""The warm pool's logic with an in-process stand-in for a worker (fast, no torch, no engine).

The stand-in worker is an asyncio task playing :mod:`yadml_trainer.loop` on the spool: it
writes ``ready``, takes each unit directory with a ``request.json``, and answers with ``log``
and ``exit``. What it answers comes from the unit's arguments (``--behave STATUS|die|oom|
hang``), so each test drives the pool through one path: reuse, retirement, a dead or
out-of-memory worker, the time limit, cancellation, staging.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from volunteer_client.errors import ExecutionFailed
from volunteer_client.executors.base import ExecutionRequest
from volunteer_client.executors.warm_pool import WarmPool
from volunteer_client.executors.worker_launcher import WorkerLauncher, WorkerReport, WorkerSpec
from yadml_common.wire import TaskConfig
from yadml_trainer.spool import EXIT, LOG, READY, REQUEST, STOP


@dataclass(eq=False)
class FakeWorker:
    spool: Path
    spec: WorkerSpec
    task: asyncio.Task[None] | None = None
    ended: WorkerReport | None = None
    seen: list[list[str]] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.ended is None


class FakeLauncher(WorkerLauncher[FakeWorker]):
    memory_limit_mb = 96

    def __init__(self, *, start_fails: bool = False) -> None:
        self.started: list[FakeWorker] = []
        self.stopped: list[FakeWorker] = []
        self.start_fails = start_fails
        #: set when a worker takes its first unit, so tests wait on it instead of polling
        self.unit_taken = asyncio.Event()

    async def start(self, spool: Path, spec: WorkerSpec) -> FakeWorker:
        worker = FakeWorker(spool=spool, spec=spec)
        worker.task = asyncio.create_task(self._loop(worker))
        self.started.append(worker)
        return worker

    async def _loop(self, worker: FakeWorker) -> None:
        if self.start_fails:
            worker.ended = WorkerReport(exit_status=1, output="No module named loop\n")
            return
        (worker.spool / READY).write_text("1\n")
        done: set[str] = set()
        while not (worker.spool / STOP).exists():
            for unit in sorted(p for p in worker.spool.iterdir() if p.is_dir()):
                if unit.name in done or not (unit / REQUEST).is_file():
                    continue
                done.add(unit.name)
                args = json.loads((unit / REQUEST).read_text())
                worker.seen.append(args)
                self.unit_taken.set()
                behave = args[args.index("--behave") + 1]
                (unit / LOG).write_text(f"unit {unit.name}\n")
                if behave == "die":
                    worker.ended = WorkerReport(signal=signal.SIGKILL, output="gone\n")
                    return
                if behave == "oom":
                    worker.ended = WorkerReport(signal=signal.SIGKILL, oom_killed=True)
                    return
                if behave == "hang":
                    await asyncio.sleep(3600)
                if behave == "0":
                    output = Path(args[args.index("--output") + 1])
                    await asyncio.to_thread(output.write_bytes, b"weights")
                (unit / EXIT).write_text(f"{behave}\n")
            await asyncio.sleep(0.01)
        worker.ended = WorkerReport(exit_status=0)

    async def alive(self, worker: FakeWorker) -> bool:
        return worker.alive

    async def report(self, worker: FakeWorker) -> WorkerReport:
        return worker.ended or WorkerReport(output="still running\n")

    async def stop(self, worker: FakeWorker) -> None:
        assert worker.task is not None
        worker.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker.task
        if worker.ended is None:
            worker.ended = WorkerReport(signal=signal.SIGTERM)
        self.stopped.append(worker)

    def stage(self, request: ExecutionRequest, unit_dir: Path, seen_as: str) -> list[str]:
        assert unit_dir.name.startswith(".staging-")  # never built inside the spool
        (unit_dir / "staged").write_text(seen_as)
        behave = request.task.model  # the tests smuggle the behaviour in the model name
        if behave == "unstageable":
            raise OSError("disk full")
        return ["--output", str(request.output_path), "--behave", behave]

    def collect(self, request: ExecutionRequest, unit_dir: Path) -> bool:
        assert (unit_dir / "staged").read_text() == str(unit_dir)
        return request.output_path.is_file()


def _request(tmp_path: Path, name: str, behave: str, *, timeout_s: float = 5.0) -> ExecutionRequest:
    work = tmp_path / name
    work.mkdir(parents=True)
    return ExecutionRequest(
        work_dir=work,
        shard_path=work / "shard",
        weights_path=work / "weights",
        task=TaskConfig.model_construct(model=behave),
        output_path=work / "output",
        timeout_s=timeout_s,
        threads=1,
    )


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def pool(tmp_path: Path, launcher: FakeLauncher) -> WarmPool[FakeWorker]:
    return WarmPool(launcher=launcher, spool_dir=tmp_path / "spool")


SPEC = WorkerSpec(threads=1)


async def test_one_worker_takes_unit_after_unit(
    tmp_path: Path, pool: WarmPool[FakeWorker], launcher: FakeLauncher
) -> None:
    for name in ("a", "b"):
        result = await pool.run(_request(tmp_path, name, "0"), SPEC)
        assert result.output_path.read_bytes() == b"weights"
        assert f"-{name}" in result.log_tail
    with pytest.raises(ExecutionFailed) as info:  # the trainer's verdict keeps the worker
        await pool.run(_request(tmp_path, "bad", "2"), SPEC)
    assert info.value.reason == "invalid_input"
    [worker] = launcher.started
    assert pool.handles() == [worker]
    assert len(worker.seen) == 3
    assert sorted(p.name for p in worker.spool.iterdir()) == [READY]  # unit dirs removed
    await pool.aclose()
    assert launcher.stopped == [worker]
    assert not worker.spool.exists()


async def test_concurrent_units_get_a_worker_each(
    tmp_path: Path, pool: WarmPool[FakeWorker], launcher: FakeLauncher
) -> None:
    await asyncio.gather(*(pool.run(_request(tmp_path, n, "0"), SPEC) for n in "abc"))
    assert len(launcher.started) == 3
    await pool.run(_request(tmp_path, "d", "0"), SPEC)
    assert len(launcher.started) == 3  # idle ones are reused
    await pool.aclose()


async def test_other_spec_retires_the_idle_worker(
    tmp_path: Path, pool: WarmPool[FakeWorker], launcher: FakeLauncher
) -> None:
    await pool.run(_request(tmp_path, "a", "0"), SPEC)
    await pool.run(_request(tmp_path, "b", "0"), WorkerSpec(threads=2))
    first, second = launcher.started
    assert launcher.stopped == [first]
    assert pool.handles() == [second]
    await pool.aclose()


async def test_a_trainer_error_retires_the_worker(
    tmp_path: Path, pool: WarmPool[FakeWorker], launcher: FakeLauncher
) -> None:
    with pytest.raises(ExecutionFailed) as info:
        await pool.run(_request(tmp_path, "a", "1"), SPEC)
    assert info.value.reason == "crash"
    assert "exit status 1" in info.value.detail
    assert pool.handles() == []
    assert launcher.stopped == launcher.started
    await pool.run(_request(tmp_path, "b", "0"), SPEC)
    assert len(launcher.started) == 2
    await pool.aclose()


async def test_a_worker_that_dies_fails_its_unit_and_is_replaced(
    tmp_path: Path, pool: WarmPool[FakeWorker], launcher: FakeLauncher
) -> None:
    with pytest.raises(ExecutionFailed) as info:
        await pool.run(_request(tmp_path, "a", "die"), SPEC)
    assert info.value.reason == "crash"
    assert "the warm trainer died: killed by SIGKILL" in info.value.detail
    assert "gone" in info.value.detail
    assert "unit u000000-a" in info.value.detail
    with pytest.raises(ExecutionFailed) as info:
        await pool.run(_request(tmp_path, "b", "oom"), SPEC)
    assert info.value.reason == "out_of_memory"
    assert "96 MB" in info.value.detail
    assert pool.handles() == []
    await pool.run(_request(tmp_path, "c", "0"), SPEC)
    assert len(launcher.started) == 3
    await pool.aclose()


async def test_an_idle_worker_that_died_is_replaced(
    tmp_path: Path, pool: WarmPool[FakeWorker], launcher: FakeLauncher
) -> None:
    await pool.run(_request(tmp_path, "a", "0"), SPEC)
    [first] = launcher.started
    await launcher.stop(first)
    await pool.run(_request(tmp_path, "b", "0"), SPEC)
    assert len(launcher.started) == 2
    assert pool.handles() == [launcher.started[1]]
    await pool.aclose()


async def test_time_limit_stops_the_worker(
    tmp_path: Path, pool: WarmPool[FakeWorker], launcher: FakeLauncher
) -> None:
    with pytest.raises(ExecutionFailed) as info:
        await pool.run(_request(tmp_path, "a", "hang", timeout_s=0.3), SPEC)
    assert info.value.reason == "timeout"
    assert "0.3 s" in info.value.detail
    assert launcher.stopped == launcher.started
    assert pool.handles() == []


async def test_cancellation_stops_the_worker(
    tmp_path: Path, pool: WarmPool[FakeWorker], launcher: FakeLauncher
) -> None:
    task = asyncio.create_task(pool.run(_request(tmp_path, "a", "hang"), SPEC))
    async with asyncio.timeout(10):
        await launcher.unit_taken.wait()
    assert launcher.started[0].seen
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert launcher.stopped == launcher.started
    assert pool.handles() == []
    assert list((tmp_path / "spool").iterdir()) == []


async def test_a_worker_that_cannot_start_is_a_crash(tmp_path: Path) -> None:
    launcher = FakeLauncher(start_fails=True)
    pool = WarmPool(launcher=launcher, spool_dir=tmp_path / "spool")
    with pytest.raises(ExecutionFailed) as info:
        await pool.run(_request(tmp_path, "a", "0"), SPEC)
    assert info.value.reason == "crash"
    assert "exited while starting with exit status 1" in info.value.detail
    assert "No module named loop" in info.value.detail
    assert pool.handles() == []
    assert list((tmp_path / "spool").iterdir()) == []


async def test_leftover_spools_are_removed_on_first_use(
    tmp_path: Path, pool: WarmPool[FakeWorker]
) -> None:
    leftover = tmp_path / "spool" / "w-old"
    leftover.mkdir(parents=True)
    await pool.run(_request(tmp_path, "a", "0"), SPEC)
    assert not leftover.exists()
    await pool.aclose()


async def test_a_unit_that_cannot_be_staged_leaves_nothing(
    tmp_path: Path, pool: WarmPool[FakeWorker], launcher: FakeLauncher
) -> None:
    with pytest.raises(OSError, match="disk full"):
        await pool.run(_request(tmp_path, "a", "unstageable"), SPEC)
    assert pool.handles() == []
    assert launcher.stopped == launcher.started
    assert list((tmp_path / "spool").iterdir()) == []
