"""The Docker executor on a real engine with the real worker image (`make image`).

Each test uses its own ``yadml.client`` label; the ``client_id`` fixture fails the test when
one of its containers is left behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import docker
import pytest
import safetensors.torch
import torch

from tests.volunteer_client.executors.conftest import make_request
from volunteer_client.errors import ExecutionFailed
from volunteer_client.executors import DockerExecutor, DockerOptions, ProcessExecutor
from volunteer_client.executors.docker_container import LABEL_CLIENT
from yadml_common.wire import REPORT_METADATA_KEY

pytestmark = pytest.mark.timeout(240)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return dict(safetensors.torch.load_file(str(path)))


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


def _containers(client_id: str) -> list[str]:
    client = docker.from_env()
    try:
        found = client.containers.list(all=True, filters={"label": f"{LABEL_CLIENT}={client_id}"})
        return [c.name or "" for c in found]
    finally:
        client.close()


def _payload(code: str) -> tuple[str, ...]:
    """A stand-in for the trainer: Python code run in the container (trainer args ignored)."""
    return ("python3", "-c", textwrap.dedent(code))


async def test_same_result_as_process_executor(tmp_path: Path, client_id: str) -> None:
    process_req = make_request(tmp_path / "process", samples=600)
    cold_req = make_request(tmp_path / "cold", samples=600)
    await ProcessExecutor().run(process_req)
    executor = DockerExecutor(DockerOptions(client_id=client_id))
    result = await executor.run(cold_req)
    assert result.output_path == cold_req.output_path
    expected = _weights(process_req.output_path)
    _assert_close(_weights(cold_req.output_path), expected)
    with safetensors.safe_open(str(cold_req.output_path), "pt") as f:
        assert REPORT_METADATA_KEY in (f.metadata() or {})
    assert cold_req.progress_path is not None
    assert float(cold_req.progress_path.read_text()) == 1.0
    assert not (cold_req.work_dir / "out").exists()
    assert _containers(client_id) == []


async def test_warm_container_takes_unit_after_unit(tmp_path: Path, client_id: str) -> None:
    process_req = make_request(tmp_path / "process", samples=400)
    await ProcessExecutor().run(process_req)
    expected = _weights(process_req.output_path)
    executor = DockerExecutor(
        DockerOptions(client_id=client_id, warm=True, spool_dir=tmp_path / "spool")
    )
    try:
        for i in range(2):
            req = make_request(tmp_path / f"warm{i}", samples=400)
            await executor.run(req)
            _assert_close(_weights(req.output_path), expected)
            assert len(_containers(client_id)) == 1  # the same container, still running
        # a failing unit does not take the warm container down
        bad = make_request(tmp_path / "bad", samples=400)
        bad.weights_path.write_bytes(b"not safetensors")
        with pytest.raises(ExecutionFailed) as info:
            await executor.run(bad)
        assert info.value.reason == "invalid_input"
        assert "not valid safetensors" in info.value.detail
        assert len(_containers(client_id)) == 1
    finally:
        await executor.aclose()
    assert _containers(client_id) == []


async def test_container_is_locked_down(tmp_path: Path, client_id: str) -> None:
    executor = DockerExecutor(
        DockerOptions(client_id=client_id, memory_mb=512, cpus=1.5, pids_limit=64),
        command=_payload("""
            import os, sys, time
            print("uid", os.getuid(), flush=True)
            try:
                open("/etc/evil", "w")
            except OSError as exc:
                print("rootfs:", exc.strerror, flush=True)
            time.sleep(30)
        """),
    )
    req = make_request(tmp_path, timeout_s=60)
    task = asyncio.create_task(executor.run(req))
    client = docker.from_env()
    try:
        deadline = time.monotonic() + 60
        while not (names := _containers(client_id)):
            assert time.monotonic() < deadline, "no container started"
            await asyncio.sleep(0.2)
        attrs = client.containers.get(names[0]).attrs
        host = attrs["HostConfig"]
        assert host["NetworkMode"] == "none"
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in host["SecurityOpt"]
        assert host["PidsLimit"] == 64
        assert host["Memory"] == host["MemorySwap"] == 512 * 1024 * 1024
        assert host["NanoCpus"] == 1_500_000_000
        assert attrs["Config"]["User"].split(":")[0] not in ("", "0", "root")
        binds = {b.split(":")[1]: b.split(":")[-1] for b in host["Binds"]}
        assert binds["/unit/shard.safetensors"] == "ro"
        assert binds["/unit/weights.safetensors"] == "ro"
        assert binds["/out"] == "rw"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        client.close()
    assert _containers(client_id) == []  # cancellation removes the container


async def test_network_connection_fails_fast(tmp_path: Path, client_id: str) -> None:
    import contextlib
    import ipaddress
    import socket

    import docker.errors

    from volunteer_client.executors.worker_image import default_image

    # Targets of our own, never a public host: listeners on the host's loopback (what a
    # container sharing the host's network would reach) and on the Docker bridge's gateway
    # (what a container on the default network reaches: a bridged container checks first).
    engine = docker.from_env()
    try:
        ipam = engine.networks.get("bridge").attrs["IPAM"]["Config"][0]
        # Older engines name only the subnet; the gateway is then its first address.
        gateway = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
    except (docker.errors.DockerException, LookupError, TypeError, ValueError):
        gateway = None
    with contextlib.ExitStack() as stack:
        stack.callback(engine.close)
        targets: list[tuple[str, int]] = []
        for address in ["127.0.0.1", gateway] if gateway else ["127.0.0.1"]:
            listener = stack.enter_context(socket.socket())
            try:
                listener.bind((address, 0))
            except OSError:
                continue  # the engine's bridge is not on this host
            listener.listen(16)
            targets.append(listener.getsockname()[:2])
        for target in targets:
            socket.create_connection(target, timeout=5).close()  # reachable from the host
        for target in [t for t in targets if t[0] == gateway]:
            probe = f"import socket; socket.create_connection({target!r}, timeout=5).close()"
            try:
                await asyncio.to_thread(
                    engine.containers.run,
                    default_image(),
                    ["python3", "-c", probe],
                    network_mode="bridge",
                    labels={LABEL_CLIENT: client_id},
                    remove=True,
                )
            except docker.errors.ContainerError:
                targets.remove(target)  # a host firewall drops it: no test of the executor

        executor = DockerExecutor(
            DockerOptions(client_id=client_id),
            command=_payload(f"""
            import socket, sys
            for target in {targets!r}:
                try:
                    socket.create_connection(target, timeout=20).close()
                except OSError as exc:
                    print("blocked", target, exc, flush=True)
                else:
                    print("CONNECTED", target, flush=True)
                    sys.exit(0)
            sys.exit(1)
        """),
        )
        started = time.monotonic()
        with pytest.raises(ExecutionFailed) as info:
            await executor.run(make_request(tmp_path, timeout_s=60))
        assert time.monotonic() - started < 20, "a blocked connection must fail, not hang"
    assert info.value.reason == "crash"
    assert info.value.detail.count("blocked") == len(targets), info.value.detail
    assert "CONNECTED" not in info.value.detail


async def test_time_limit_kills_and_removes(tmp_path: Path, client_id: str) -> None:
    executor = DockerExecutor(
        DockerOptions(client_id=client_id),
        command=_payload("import time; print('sleeping', flush=True); time.sleep(600)"),
    )
    started = time.monotonic()
    with pytest.raises(ExecutionFailed) as info:
        await executor.run(make_request(tmp_path, timeout_s=3))
    assert info.value.reason == "timeout"
    assert time.monotonic() - started < 20
    assert "sleeping" in info.value.detail  # the log tail goes with the report
    assert _containers(client_id) == []


async def test_memory_limit_is_out_of_memory(tmp_path: Path, client_id: str) -> None:
    executor = DockerExecutor(
        DockerOptions(client_id=client_id, memory_mb=96),
        command=_payload("""
            chunks = []
            for _ in range(64):
                chunks.append(bytearray(16 << 20))  # 1 GiB in all, touched
        """),
    )
    with pytest.raises(ExecutionFailed) as info:
        await executor.run(make_request(tmp_path, timeout_s=60))
    assert info.value.reason == "out_of_memory", info.value.detail
    assert _containers(client_id) == []


async def test_warm_time_limit_replaces_the_container(tmp_path: Path, client_id: str) -> None:
    executor = DockerExecutor(
        DockerOptions(client_id=client_id, warm=True, spool_dir=tmp_path / "spool")
    )
    try:
        with pytest.raises(ExecutionFailed) as info:
            # 60k samples cannot be trained in 2 s
            await executor.run(make_request(tmp_path / "slow", samples=60000, timeout_s=4))
        assert info.value.reason == "timeout"
        assert _containers(client_id) == []
        req = make_request(tmp_path / "next", samples=200)
        await executor.run(req)
        assert req.output_path.is_file()
    finally:
        await executor.aclose()


def test_refuses_an_image_it_does_not_have(tmp_path: Path, client_id: str) -> None:
    missing = "sha256:" + "0" * 64
    req = make_request(tmp_path)
    req = type(req)(**{**req.__dict__, "image": missing})
    executor = DockerExecutor(DockerOptions(client_id=client_id))
    with pytest.raises(ExecutionFailed) as info:
        asyncio.run(executor.run(req))
    assert info.value.reason == "executor_error"
    assert "never pulls" in info.value.detail


def test_unit_image_by_digest_is_used(tmp_path: Path, client_id: str) -> None:
    executor = DockerExecutor(DockerOptions(client_id=client_id))
    image_id = executor.resolve_image(None)
    assert image_id.startswith("sha256:")
    req = make_request(tmp_path, samples=100)
    req = type(req)(**{**req.__dict__, "image": image_id})
    asyncio.run(executor.run(req))
    assert req.output_path.is_file()


_KILLED_CLIENT = """
import asyncio, sys
from pathlib import Path
from tests.volunteer_client.executors.conftest import make_request
from volunteer_client.executors import DockerExecutor, DockerOptions
sleep = ("python3", "-c", "import time; time.sleep(600)")
ex = DockerExecutor(DockerOptions(client_id=sys.argv[1]), command=sleep)
asyncio.run(ex.run(make_request(Path(sys.argv[2]), timeout_s=600)))
"""


def test_restarted_client_removes_what_a_killed_one_left(tmp_path: Path, client_id: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CLIENT, client_id, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[3],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
    )
    try:
        deadline = time.monotonic() + 90
        while not _containers(client_id):
            assert proc.poll() is None, "the client died before starting its container"
            assert time.monotonic() < deadline, "no container started"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    time.sleep(0.5)
    assert len(_containers(client_id)) == 1  # SIGKILL: nobody removed it
    # the restarted client cleans up before its first unit
    executor = DockerExecutor(DockerOptions(client_id=client_id))
    req = make_request(tmp_path / "again", samples=100)
    asyncio.run(executor.run(req))
    assert _containers(client_id) == []
