"""``DockerExecutor``: the trainer inside a locked-down container of the worker image.

Each unit runs ``python3 -m yadml_trainer.trainer`` in a container of the worker image
(``images/worker``), with:

* the unit's shard, weights and task mounted **read-only**, and one output directory (the
  trainer writes the weights and its progress file there) mounted read-write;
* ``network_mode=none``, a read-only root filesystem (a small ``/tmp`` tmpfs),
  ``cap_drop=ALL``, ``no-new-privileges``, a non-root user, and pids/memory/CPU limits
  from the volunteer's preferences; an optional OCI ``runtime`` (e.g. gVisor's ``runsc``);
* the time limit enforced: past it the container is killed and removed (``timeout``); a
  container the kernel killed for memory is ``out_of_memory``;
* the last 4 KiB of its output kept as the log tail (sent with a failure report);
* every container labelled ``yadml.client=<client id>``: the executor removes its client's
  labelled containers when it starts, so nothing survives a client killed and restarted,
  and it removes each container after success, failure, time-out or cancellation.

The image is the unit's ``image`` (an image id or ``name@sha256:...`` digest, which must
already be present locally: the executor never pulls), else the configured ``image``, else
``yadml-worker:<trainer version>`` (:func:`.image.default_image`).

``warm=True`` keeps a container running :mod:`yadml_trainer.loop` between units,
so the interpreter start and ``import torch`` are paid once: each unit's inputs are copied
into a spool directory mounted into that container. A unit that fails by time or memory
takes its container down with it; the next unit starts a fresh one.

The Docker SDK is synchronous; its calls run in worker threads. Output files are taken from
the container's directories without following links.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ExecutionFailed
from .base import ExecutionRequest, ExecutionResult, Executor
from .worker_image import default_image

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

__all__ = [
    "CONTAINER_UID",
    "LABEL_CLIENT",
    "LABEL_UNIT",
    "TRAINER_COMMAND",
    "DockerExecutor",
    "client_id_for",
]

log = logging.getLogger(__name__)

_Made = TypeVar("_Made")

#: The image's non-root user (images/worker/Dockerfile), used when the client runs as root.
CONTAINER_UID = 10001
LABEL_CLIENT = "yadml.client"
LABEL_UNIT = "yadml.unit"
LABEL_MODE = "yadml.mode"
TRAINER_COMMAND: tuple[str, ...] = ("python3", "-m", "yadml_trainer.trainer")
LOOP_COMMAND: tuple[str, ...] = ("python3", "-m", "yadml_trainer.loop")
LOG_TAIL_BYTES = 4096
OUTPUT_NAME = "output.safetensors"
PROGRESS_NAME = "progress"
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: How often a running unit's progress is copied out, and a warm unit's exit is looked for.
PROGRESS_INTERVAL_S = 0.5
WARM_POLL_S = 0.02


def client_id_for(state_dir: Path) -> str:
    """A stable label value for one client state directory."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]


def _read_small(path: Path, limit: int = 256) -> str | None:
    """A small regular file's text, never following a link; None when absent or odd."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _take_regular_file(src: Path, dest: Path) -> bool:
    """Move ``src`` (a regular file, not a link) to ``dest``; False if it is not one."""
    try:
        st = os.lstat(src)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    dest.unlink(missing_ok=True)
    try:
        os.replace(src, dest)
    except OSError:
        shutil.copyfile(src, dest, follow_symlinks=False)
    return True


def _tail(data: bytes | str, limit: int = LOG_TAIL_BYTES) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return raw[-limit:].decode("utf-8", "replace")


@dataclass
class _Warm:
    """One warm container and its spool directory (mounted at ``/spool``)."""

    container: Container
    image_id: str
    spool: Path
    busy: bool = False
    units: int = 0
    ready_at: float = 0.0
    names: set[str] = field(default_factory=set)


class DockerExecutor(Executor):
    """Run the trainer in a Docker container; see the module docstring.

    ``image``: default image (tag, id or digest); ``client_id``: the value of the
    ``yadml.client`` label (one per client state dir, :func:`client_id_for`);
    ``memory_mb``/``cpus``/``pids_limit``: the container's limits (None: no limit);
    ``runtime``: an OCI runtime name (``runsc``...); ``warm``: keep containers between
    units; ``spool_dir``: where warm containers' spools live (default: a temp dir);
    ``command``: what runs in place of ``python3 -m yadml_trainer.trainer`` (tests);
    ``docker_client``: an SDK client (default ``docker.from_env()`` on first use).
    """

    runtime = "docker"

    def __init__(
        self,
        *,
        image: str | None = None,
        client_id: str = "default",
        memory_mb: int | None = 2048,
        cpus: float | None = None,
        pids_limit: int | None = 256,
        runtime: str | None = None,
        warm: bool = False,
        spool_dir: Path | None = None,
        tmpfs_mb: int = 64,
        command: Sequence[str] = TRAINER_COMMAND,
        docker_client: DockerClient | None = None,
    ) -> None:
        self.image = image
        self.client_id = client_id
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.pids_limit = pids_limit
        self.oci_runtime = runtime
        self.warm = warm
        self.spool_dir = spool_dir
        self.tmpfs_mb = tmpfs_mb
        self.command = list(command)
        self._client = docker_client
        self._cleaned = False
        self._lock = asyncio.Lock()
        self._warm: list[_Warm] = []

    # ------------------------------------------------------------------ docker plumbing

    def _docker(self) -> DockerClient:
        if self._client is None:
            import docker
            import docker.errors

            try:
                self._client = docker.from_env()
                self._client.ping()
            except docker.errors.DockerException as exc:
                self._client = None
                raise ExecutionFailed(
                    "executor_error", f"the Docker engine is not reachable: {exc}"
                ) from exc
        return self._client

    def _labels(self, unit: str, mode: str) -> dict[str, str]:
        return {LABEL_CLIENT: self.client_id, LABEL_UNIT: unit, LABEL_MODE: mode}

    def cleanup(self) -> int:
        """Remove every container this client started (left by a killed client). Blocking."""
        client = self._docker()
        removed = 0
        for container in client.containers.list(
            all=True, filters={"label": f"{LABEL_CLIENT}={self.client_id}"}
        ):
            with contextlib.suppress(Exception):
                container.remove(force=True)
                removed += 1
        if removed:
            log.info("removed %d leftover container(s) of this client", removed)
        self._cleaned = True
        return removed

    def resolve_image(self, name: str | None) -> str:
        """The local image id for ``name`` (or the default image). Never pulls. Blocking."""
        import docker.errors

        wanted = name or self.image or default_image()
        try:
            image = self._docker().images.get(wanted)
        except docker.errors.ImageNotFound:
            raise ExecutionFailed(
                "executor_error",
                f"image {wanted} is not present locally (this client never pulls; "
                "build it with `make image`)",
            ) from None
        except docker.errors.APIError as exc:
            raise ExecutionFailed(
                "executor_error", f"cannot inspect image {wanted}: {exc}"
            ) from exc
        image_id = image.id
        if image_id is None:  # pragma: no cover - the engine always gives one
            raise ExecutionFailed("executor_error", f"image {wanted} has no id")
        return image_id

    def _user(self) -> tuple[int, int]:
        """The container's uid/gid: the client's own, or the image's user under root."""
        if os.getuid() == 0:
            return CONTAINER_UID, CONTAINER_UID
        return os.getuid(), os.getgid()

    def _owned_dir(self, path: Path) -> None:
        """(Re)create ``path`` empty and writable by the container's user only."""
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, mode=0o700)
        uid, gid = self._user()
        if os.getuid() == 0:
            os.chown(path, uid, gid)

    @staticmethod
    def _readable(path: Path) -> None:
        """Let the container's user read an input file (its directories are not visible)."""
        mode = path.stat().st_mode
        if mode & 0o044 != 0o044:
            path.chmod(mode | 0o444)

    def _container_options(self, threads: int | None) -> dict[str, Any]:
        uid, gid = self._user()
        options: dict[str, Any] = {
            "user": f"{uid}:{gid}",
            "network_mode": "none",
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            # /tmp inside the container, not on this host
            "tmpfs": {"/tmp": f"rw,noexec,nosuid,nodev,size={self.tmpfs_mb}m"},  # noqa: S108
            "working_dir": "/tmp",  # noqa: S108
            "environment": {name: str(threads or 1) for name in _THREAD_VARS},
            "ipc_mode": "private",
            "detach": True,
        }
        if self.pids_limit is not None:
            options["pids_limit"] = self.pids_limit
        if self.memory_mb is not None:
            options["mem_limit"] = f"{self.memory_mb}m"
            options["memswap_limit"] = f"{self.memory_mb}m"  # no swap on top
        if self.cpus is not None:
            options["nano_cpus"] = int(self.cpus * 1e9)
        if self.oci_runtime:
            options["runtime"] = self.oci_runtime
        return options

    @staticmethod
    def _remove(container: Container) -> None:
        with contextlib.suppress(Exception):
            container.remove(force=True)

    @staticmethod
    def _kill(container: Container) -> None:
        with contextlib.suppress(Exception):
            container.kill()

    @staticmethod
    def _logs(container: Container) -> str:
        try:
            return _tail(container.logs(stdout=True, stderr=True, tail=200))
        except Exception as exc:
            return f"(no logs: {exc})"

    @staticmethod
    def _oom_killed(container: Container) -> bool:
        try:
            container.reload()
        except Exception:
            return False
        return bool(container.attrs.get("State", {}).get("OOMKilled"))

    @staticmethod
    async def _create(create: Callable[[], _Made], undo: Callable[[_Made], None]) -> _Made:
        """Run ``create`` (which makes a container) in a thread. If the caller is cancelled
        meanwhile, wait for it anyway and ``undo`` what it made, so nothing is left behind."""
        future = asyncio.ensure_future(asyncio.to_thread(create))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(undo, await future)
            raise

    def _discard_now(self, worker: _Warm) -> None:
        self._remove(worker.container)
        shutil.rmtree(worker.spool, ignore_errors=True)

    async def _prepare(self) -> None:
        if not self._cleaned:
            await asyncio.to_thread(self.cleanup)

    # ------------------------------------------------------------------ Executor

    async def run(self, request: ExecutionRequest) -> ExecutionResult:
        async with self._lock:
            await self._prepare()
        image_id = await asyncio.to_thread(self.resolve_image, request.image)
        request.work_dir.mkdir(parents=True, exist_ok=True)
        request.output_path.unlink(missing_ok=True)
        if self.warm:
            return await self._run_warm(request, image_id)
        return await self._run_cold(request, image_id)

    async def aclose(self) -> None:
        """Stop and remove the warm containers."""
        workers, self._warm = self._warm, []
        for worker in workers:
            await asyncio.to_thread(self._remove, worker.container)
            shutil.rmtree(worker.spool, ignore_errors=True)

    # ------------------------------------------------------------------ one container per unit

    def _create_cold(self, request: ExecutionRequest, image_id: str, out_dir: Path) -> Container:
        task_path = request.work_dir / "task.json"
        task_path.write_text(request.task.model_dump_json(indent=2))
        for path in (request.shard_path, request.weights_path, task_path):
            self._readable(path)
        command = [
            *self.command,
            "--shard", "/unit/shard.safetensors",
            "--weights", "/unit/weights.safetensors",
            "--task", "/unit/task.json",
            "--output", f"/out/{OUTPUT_NAME}",
            "--progress", f"/out/{PROGRESS_NAME}",
        ]  # fmt: skip
        if request.threads is not None:
            command += ["--threads", str(request.threads)]
        volumes = {
            str(request.shard_path): {"bind": "/unit/shard.safetensors", "mode": "ro"},
            str(request.weights_path): {"bind": "/unit/weights.safetensors", "mode": "ro"},
            str(task_path): {"bind": "/unit/task.json", "mode": "ro"},
            str(out_dir): {"bind": "/out", "mode": "rw"},
        }
        container: Container = self._docker().containers.create(
            image_id,
            command=command,
            volumes=volumes,
            labels=self._labels(request.work_dir.name, "cold"),
            name=f"yadml-{self.client_id[:8]}-{request.work_dir.name}-{uuid.uuid4().hex[:6]}",
            **self._container_options(request.threads),
        )
        return container

    async def _relay_progress(self, src: Path, dest: Path | None) -> None:
        if dest is None:
            return
        last = None
        while True:
            text = _read_small(src, 64)
            if text is not None and text != last:
                last = text
                tmp = dest.with_name(f".{dest.name}.tmp")
                tmp.write_text(text)
                os.replace(tmp, dest)
            await asyncio.sleep(PROGRESS_INTERVAL_S)

    async def _run_cold(self, request: ExecutionRequest, image_id: str) -> ExecutionResult:
        import docker.errors
        import requests.exceptions

        out_dir = request.work_dir / "out"
        self._owned_dir(out_dir)
        started = time.monotonic()
        try:
            container = await self._create(
                lambda: self._create_cold(request, image_id, out_dir), self._remove
            )
        except docker.errors.DockerException as exc:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise ExecutionFailed("executor_error", f"cannot create the container: {exc}") from exc
        relay = asyncio.create_task(
            self._relay_progress(out_dir / PROGRESS_NAME, request.progress_path)
        )
        try:
            try:
                await asyncio.to_thread(container.start)
            except docker.errors.DockerException as exc:
                raise ExecutionFailed(
                    "executor_error", f"cannot start the container: {exc}"
                ) from exc
            timeout = request.timeout_s
            try:
                status = await asyncio.to_thread(container.wait, timeout=timeout)
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                await asyncio.to_thread(self._kill, container)
                logs = await asyncio.to_thread(self._logs, container)
                raise ExecutionFailed(
                    "timeout",
                    f"container killed after the time limit of {timeout or 0:.1f} s\n{logs}",
                ) from None
            code = int(status.get("StatusCode", -1))
            logs = await asyncio.to_thread(self._logs, container)
            oom = code != 0 and await asyncio.to_thread(self._oom_killed, container)
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            await asyncio.shield(asyncio.to_thread(self._remove, container))
        try:
            return self._result(request, code, logs, oom, out_dir / OUTPUT_NAME, started)
        finally:
            if request.progress_path is not None and code == 0:
                with contextlib.suppress(OSError):
                    request.progress_path.write_text("1.0\n")
            shutil.rmtree(out_dir, ignore_errors=True)

    def _result(
        self,
        request: ExecutionRequest,
        code: int,
        logs: str,
        oom: bool,
        produced: Path,
        started: float,
    ) -> ExecutionResult:
        if code == 0:
            if not _take_regular_file(produced, request.output_path):
                raise ExecutionFailed("crash", f"exit 0 but no output file\n{logs}")
            return ExecutionResult(
                output_path=request.output_path,
                elapsed_s=time.monotonic() - started,
                log_tail=logs,
            )
        if oom:
            limit = f"{self.memory_mb} MB" if self.memory_mb is not None else "the memory limit"
            raise ExecutionFailed("out_of_memory", f"killed at {limit}\n{logs}")
        if code == 2:
            raise ExecutionFailed("invalid_input", logs)
        if "MemoryError" in logs:
            raise ExecutionFailed("out_of_memory", f"exit status {code}\n{logs}")
        raise ExecutionFailed("crash", f"exit status {code}\n{logs}")

    # ------------------------------------------------------------------ warm containers

    def _spool_root(self) -> Path:
        if self.spool_dir is None:
            self.spool_dir = Path(tempfile.mkdtemp(prefix="yadml-docker-"))
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        return self.spool_dir

    def _start_warm(self, image_id: str, threads: int | None) -> _Warm:
        name = f"yadml-{self.client_id[:8]}-warm-{uuid.uuid4().hex[:8]}"
        spool = self._spool_root() / name
        self._owned_dir(spool)
        container: Container = self._docker().containers.run(
            image_id,
            command=[*LOOP_COMMAND, "/spool"],
            volumes={str(spool): {"bind": "/spool", "mode": "rw"}},
            labels=self._labels("warm", "warm"),
            name=name,
            **self._container_options(threads),
        )
        return _Warm(container=container, image_id=image_id, spool=spool)

    async def _acquire(self, image_id: str, threads: int | None) -> _Warm:
        async with self._lock:
            for worker in self._warm:
                if not worker.busy and worker.image_id == image_id:
                    worker.busy = True
                    return worker
        worker = await self._create(lambda: self._start_warm(image_id, threads), self._discard_now)
        worker.busy = True
        self._warm.append(worker)  # no await between creation and here: never lost
        return worker

    async def _discard(self, worker: _Warm) -> None:
        async with self._lock:
            if worker in self._warm:
                self._warm.remove(worker)
        await asyncio.shield(asyncio.to_thread(self._remove, worker.container))
        shutil.rmtree(worker.spool, ignore_errors=True)

    def _stage(self, request: ExecutionRequest, unit_dir: Path, threads: int | None) -> None:
        """Copy the unit's inputs into the spool (the container may write there).

        The unit directory is built beside the spool (outside the container's mount, same
        file system) and renamed into it when complete: the warm container scans its spool,
        and must never see a directory whose owner and permissions are not set yet."""
        final_dir = unit_dir
        unit_dir = unit_dir.parent.parent / f".staging-{unit_dir.parent.name}-{unit_dir.name}"
        self._owned_dir(unit_dir)
        uid, gid = self._user()
        shutil.copyfile(request.shard_path, unit_dir / "shard.safetensors")
        shutil.copyfile(request.weights_path, unit_dir / "weights.safetensors")
        (unit_dir / "task.json").write_text(request.task.model_dump_json(indent=2))
        inside = f"/spool/{final_dir.name}"
        args = [
            "--shard", f"{inside}/shard.safetensors",
            "--weights", f"{inside}/weights.safetensors",
            "--task", f"{inside}/task.json",
            "--output", f"{inside}/{OUTPUT_NAME}",
            "--progress", f"{inside}/{PROGRESS_NAME}",
        ]  # fmt: skip
        if threads is not None:
            args += ["--threads", str(threads)]
        tmp = unit_dir / ".request.json.tmp"
        tmp.write_text(json.dumps(args))
        for path in unit_dir.iterdir():
            path.chmod(0o644)
            if os.getuid() == 0:
                os.chown(path, uid, gid)
        os.replace(tmp, unit_dir / "request.json")
        shutil.rmtree(final_dir, ignore_errors=True)
        os.replace(unit_dir, final_dir)

    async def _run_warm(self, request: ExecutionRequest, image_id: str) -> ExecutionResult:
        import docker.errors

        started = time.monotonic()
        try:
            worker = await self._acquire(image_id, request.threads)
        except docker.errors.DockerException as exc:
            raise ExecutionFailed("executor_error", f"cannot start the container: {exc}") from exc
        unit_dir = worker.spool / f"u{worker.units:06d}-{request.work_dir.name}"
        worker.units += 1
        keep = False
        try:
            await asyncio.to_thread(self._stage, request, unit_dir, request.threads)
            deadline = None if request.timeout_s is None else started + request.timeout_s
            relay = asyncio.create_task(
                self._relay_progress(unit_dir / PROGRESS_NAME, request.progress_path)
            )
            try:
                code = await self._wait_exit(worker, unit_dir, deadline)
            finally:
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay
            if code is None:  # the container died (memory) or the time ran out
                alive = await asyncio.to_thread(self._alive, worker.container)
                if alive:
                    await asyncio.to_thread(self._remove, worker.container)
                    logs = _tail(_read_small(unit_dir / "log", 1 << 20) or "")
                    raise ExecutionFailed(
                        "timeout",
                        "container killed after the time limit of "
                        f"{request.timeout_s or 0:.1f} s\n{logs}",
                    )
                oom = await asyncio.to_thread(self._oom_killed, worker.container)
                logs = _tail(
                    (_read_small(unit_dir / "log", 1 << 20) or "")
                    + await asyncio.to_thread(self._logs, worker.container)
                )
                if oom:
                    return self._result(request, 137, logs, True, unit_dir / OUTPUT_NAME, started)
                raise ExecutionFailed("crash", f"the worker container exited\n{logs}")
            logs = _tail(_read_small(unit_dir / "log", 1 << 20) or "")
            keep = True
            return self._result(request, code, logs, False, unit_dir / OUTPUT_NAME, started)
        finally:
            shutil.rmtree(unit_dir, ignore_errors=True)
            if keep:
                worker.busy = False
            else:
                await self._discard(worker)

    @staticmethod
    def _alive(container: Container) -> bool:
        try:
            container.reload()
        except Exception:
            return False
        return bool(container.status == "running")

    async def _wait_exit(self, worker: _Warm, unit_dir: Path, deadline: float | None) -> int | None:
        """The unit's exit status; None if the container stopped or the deadline passed."""
        checked = time.monotonic()
        while True:
            text = _read_small(unit_dir / "exit", 32)
            if text is not None and text.strip():
                try:
                    return int(text.strip())
                except ValueError:
                    return 1
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            if now - checked >= PROGRESS_INTERVAL_S:
                checked = now
                if not await asyncio.to_thread(self._alive, worker.container):
                    return None
            await asyncio.sleep(WARM_POLL_S)
