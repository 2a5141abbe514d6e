from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from volunteer_client.api import ServerAPI
from volunteer_client.daemon import Daemon
from volunteer_client.errors import ExecutionFailed, Unauthorized
from volunteer_client.executors import ExecutionRequest, ExecutionResult, Executor
from volunteer_client.state import PendingFailure, StateDir, UnitRecord

from ..fake_server import TOKEN, FakeWorkServer

REPO = str(Path(__file__).resolve().parents[3])


class FakeExecutor(Executor):
    """In-process executor: copies the weights to the output, fails, or blocks."""

    def __init__(self, *, fail: ExecutionFailed | None = None, block: bool = False) -> None:
        self.fail = fail
        self.block = block
        self.requests: list[ExecutionRequest] = []
        self.started = asyncio.Event()
        self.cancelled = 0

    async def run(self, request: ExecutionRequest) -> ExecutionResult:
        self.requests.append(request)
        if request.progress_path is not None:
            request.progress_path.write_text("0.25")
        self.started.set()
        if self.block:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if self.fail is not None:
            raise self.fail
        shutil.copyfile(request.weights_path, request.output_path)
        return ExecutionResult(output_path=request.output_path, elapsed_s=0.01, log_tail="")


class FakeSleep:
    """Records the delays; sets ``stop`` after ``limit`` calls."""

    def __init__(self, stop: asyncio.Event | None = None, limit: int = 1000) -> None:
        self.delays: list[float] = []
        self.stop = stop
        self.limit = limit

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.stop is not None and len(self.delays) >= self.limit:
            self.stop.set()
        await asyncio.sleep(0)


def _daemon(
    api: ServerAPI,
    state: StateDir,
    executor: Executor,
    *,
    sleep: Callable[[float], object] | None = None,
    **options: object,
) -> Daemon:
    return Daemon(
        api=api,
        state=state,
        executor=executor,
        sleep=sleep or FakeSleep(),  # type: ignore[arg-type]
        random_fn=lambda: 1.0,
        **options,  # type: ignore[arg-type]
    )


def _units_left(state: StateDir) -> list[int]:
    return [r.result_id for r in state.units.load_all()]


async def test_unit_is_downloaded_run_and_uploaded(
    fake_server: FakeWorkServer, api: ServerAPI, state: StateDir
) -> None:
    unit = fake_server.add_unit(1, weights=b"trained-weights")
    executor = FakeExecutor()
    assert await _daemon(api, state, executor, threads=2).run_once() == 1
    assert fake_server.uploads == {1: b"trained-weights"}
    assert fake_server.failures == {}
    request = executor.requests[0]
    assert request.task == unit.task
    assert request.threads == 2
    assert request.timeout_s is not None
    assert 3500 < request.timeout_s <= 3600
    assert _units_left(state) == []
    assert len(state.cache.entries()) == 2  # inputs stay cached for the next round


async def test_cached_inputs_are_not_downloaded_again(
    fake_server: FakeWorkServer, api: ServerAPI, state: StateDir
) -> None:
    fake_server.add_unit(1)
    await _daemon(api, state, FakeExecutor()).run_once()
    fake_server.add_unit(2)
    fake_server.blobs.clear()  # a download now would fail with 404
    assert await _daemon(api, state, FakeExecutor()).run_once() == 1
    assert set(fake_server.uploads) == {1, 2}


async def test_execution_failure_is_reported(
    fake_server: FakeWorkServer, api: ServerAPI, state: StateDir
) -> None:
    fake_server.add_unit(1)
    executor = FakeExecutor(fail=ExecutionFailed("crash", "Traceback: boom"))
    assert await _daemon(api, state, executor).run_once() == 1
    assert fake_server.failures[1].reason == "crash"
    assert fake_server.failures[1].detail == "Traceback: boom"
    assert fake_server.uploads == {}
    assert _units_left(state) == []


@pytest.mark.parametrize(("status", "error"), [(422, "invalid_tensors"), (413, "too_large")])
async def test_rejected_output_on_upload_reports_failure_without_retrying(
    fake_server: FakeWorkServer, api: ServerAPI, state: StateDir, status: int, error: str
) -> None:
    fake_server.add_unit(1)
    fake_server.upload_script = [(status, error, {})]
    sleep = FakeSleep()
    assert await _daemon(api, state, FakeExecutor(), sleep=sleep).run_once() == 1
    assert fake_server.upload_attempts == {1: 1}
    assert fake_server.failures[1].reason == "other"
    assert error in fake_server.failures[1].detail
    assert sleep.delays == []


async def test_transient_failure_report_errors_are_retried(
    fake_server: FakeWorkServer, api: ServerAPI, state: StateDir
) -> None:
    fake_server.add_unit(1)
    fake_server.failure_script = [
        (503, "unavailable", {}),
        (429, "slow_down", {"Retry-After": "9"}),
    ]
    sleep = FakeSleep()
    executor = FakeExecutor(fail=ExecutionFailed("crash", "boom"))
    assert await _daemon(api, state, executor, sleep=sleep).run_once() == 1
    assert fake_server.failures[1].reason == "crash"
    assert sleep.delays == [1.0, 9.0]
    assert _units_left(state) == []


async def test_refused_download_reports_download_error(
    fake_server: FakeWorkServer, api: ServerAPI, state: StateDir
) -> None:
    unit = fake_server.add_unit(1)
    del fake_server.blobs[unit.inputs[0].sha256]  # 404
    sleep = FakeSleep()
    executor = FakeExecutor()
    assert await _daemon(api, state, executor, sleep=sleep).run_once() == 1
    assert fake_server.failures[1].reason == "download_error"
    assert "not_found" in fake_server.failures[1].detail
    assert executor.requests == []
    assert sleep.delays == []


async def test_transient_upload_errors_are_retried_with_backoff(
    fake_server: FakeWorkServer, api: ServerAPI, state: StateDir
) -> None:
    fake_server.add_unit(1)
    fake_server.upload_script = [(503, "unavailable", {}), (500, "oops", {})]
    sleep = FakeSleep()
    assert await _daemon(api, state, FakeExecutor(), sleep=sleep).run_once() == 1
    assert fake_server.upload_attempts == {1: 3}
    assert 1 in fake_server.uploads
    assert sleep.delays == [1.0, 2.0]


async def test_410_on_upload_drops_the_unit(
    fake_server: FakeWorkServer, api: ServerAPI, state: StateDir
) -> None:
    fake_server.add_unit(1)
    fake_server.upload_script = [(410, "gone", {})]
    assert await _daemon(api, state, FakeExecutor()).run_once() == 1
    assert fake_server.failures == {}
    assert _units_left(state) == []


async def test_sha_mismatch_reports_download_error(
    fake_server: FakeWorkServer, api: ServerAPI, state: StateDir
) -> None:
    unit = fake_server.add_unit(1)
    fake_server.blob_corruption.add(unit.inputs[0].sha256)
    executor = FakeExecutor()
    assert await _daemon(api, state, executor, download_attempts=2).run_once() == 1
    assert fake_server.failures[1].reason == "download_error"
    assert "sha256" in fake_server.failures[1].detail
    assert executor.requests == []
    assert unit.inputs[0].sha256 not in [p.name for p in state.cache.entries()]
    assert all(not p.name.endswith(".part") for p in state.cache.root.iterdir())


async def test_restart_resumes_leftover_units(
    fake_server: FakeWorkServer, api: ServerAPI, state: StateDir
) -> None:
    # Three units from a previous run, then the queue is emptied: the server has no new work.
    running = fake_server.add_unit(1, weights=b"w1")
    uploading = fake_server.add_unit(2)
    expired = fake_server.add_unit(3, deadline=datetime.now(UTC) - timedelta(seconds=1))
    reporting = fake_server.add_unit(4)
    fake_server.queue.clear()
    state.units.save(UnitRecord(assignment=running, status="running"))
    state.units.save(UnitRecord(assignment=uploading, status="uploading"))
    (state.units.unit_dir(2) / "output.safetensors").write_bytes(b"finished output")
    state.units.save(UnitRecord(assignment=expired, status="running"))
    state.units.save(
        UnitRecord(
            assignment=reporting,
            status="reporting",
            failure=PendingFailure(reason="timeout", detail="slow"),
        )
    )
    executor = FakeExecutor()
    assert await _daemon(api, state, executor, max_concurrent=2).run_once() == 4
    assert [r.work_dir.name for r in executor.requests] == ["1"]  # only unit 1 ran again
    assert fake_server.uploads == {1: b"w1", 2: b"finished output"}
    assert fake_server.failures[3].reason == "aborted"
    assert fake_server.failures[3].detail == "client restarted after deadline"
    assert fake_server.failures[4].reason == "timeout"
    assert _units_left(state) == []


async def test_abort_from_heartbeat_cancels_the_unit(
    fake_server: FakeWorkServer, api: ServerAPI, state: StateDir
) -> None:
    fake_server.add_unit(1)
    executor = FakeExecutor(block=True)
    daemon = _daemon(api, state, executor, heartbeat_s=0.05)
    runner = asyncio.create_task(daemon.run_once())

    def progress_reported() -> bool:
        # Heartbeats run on real time: on a loaded machine the first ones may go out
        # while the unit still downloads, so wait for one that carries its progress.
        return any(
            (u.result_id, u.fraction_done) == (1, 0.25)
            for beat in fake_server.heartbeats
            for u in beat.running
        )

    async with asyncio.timeout(10), fake_server.heartbeat_arrived:
        await fake_server.heartbeat_arrived.wait_for(progress_reported)
    fake_server.abort = {1}
    assert await asyncio.wait_for(runner, timeout=10) == 1
    assert executor.cancelled == 1
    assert fake_server.uploads == {}
    assert fake_server.failures == {}
    assert _units_left(state) == []


async def test_backoff_grows_and_is_capped_while_the_server_is_down(
    dead_url: str, state: StateDir
) -> None:
    stop = asyncio.Event()
    sleep = FakeSleep(stop, limit=8)
    async with ServerAPI(base_url=dead_url, token=TOKEN) as api:
        daemon = _daemon(api, state, FakeExecutor(), sleep=sleep, backoff_max_s=10.0)
        await asyncio.wait_for(daemon.run_forever(stop), timeout=20)
    assert sleep.delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]


async def test_retry_after_and_poll_hint_are_honoured(
    fake_server: FakeWorkServer, api: ServerAPI, state: StateDir
) -> None:
    fake_server.work_script = [(429, "too_many_requests", {"Retry-After": "7"})]
    fake_server.retry_after_s = 42.0
    stop = asyncio.Event()
    sleep = FakeSleep(stop, limit=2)
    daemon = _daemon(api, state, FakeExecutor(), sleep=sleep, poll_jitter=0.0)
    await asyncio.wait_for(daemon.run_forever(stop), timeout=10)
    assert sleep.delays == [7.0, 42.0]
    assert len(fake_server.work_requests) == 2
    assert daemon.poll_loop.poll_delay(0.0) == 0.5  # clamped to min_poll_s
    assert daemon.poll_loop.poll_delay(1e9) == 3600.0


async def test_stop_interrupts_running_units_and_keeps_them(
    fake_server: FakeWorkServer, api: ServerAPI, state: StateDir
) -> None:
    fake_server.add_unit(1)
    executor = FakeExecutor(block=True)
    stop = asyncio.Event()
    daemon = _daemon(api, state, executor)
    runner = asyncio.create_task(daemon.run_forever(stop))
    await asyncio.wait_for(executor.started.wait(), timeout=10)
    stop.set()
    await asyncio.wait_for(runner, timeout=10)
    assert executor.cancelled == 1
    [record] = state.units.load_all()
    assert (record.result_id, record.status) == (1, "running")
    assert fake_server.failures == {}
    assert fake_server.uploads == {}


async def test_unauthorized_stops_the_daemon(fake_server: FakeWorkServer, state: StateDir) -> None:
    async with ServerAPI(base_url=fake_server.url, token="revoked") as api:
        with pytest.raises(Unauthorized):
            await _daemon(api, state, FakeExecutor()).run_forever(asyncio.Event())


async def test_daemon_with_the_process_executor(
    fake_server: FakeWorkServer, api: ServerAPI, state: StateDir
) -> None:
    from volunteer_client.executors import ProcessExecutor

    fake_server.add_unit(1, weights=b"weights from the server")
    executor = ProcessExecutor(module="tests.volunteer_client.fake_trainer", pythonpath=[REPO])
    assert await _daemon(api, state, executor, threads=1).run_once() == 1
    assert fake_server.uploads == {1: b"weights from the server"}
