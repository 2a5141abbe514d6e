"""``DockerExecutor``: the trainer inside a locked-down container of the worker image.

Each unit runs ``python3 -m yadml_trainer.trainer`` in a container of the worker image
(``images/worker``) hardened as :mod:`.docker_container` describes, with:

* the unit's shard, weights and task mounted **read-only**, and one output directory (the
  trainer writes the weights and its progress file there) mounted read-write; output files
  are taken from it without following links;
* the time limit enforced: past it the container is killed and removed (``timeout``); a
  container the kernel killed for memory is ``out_of_memory`` (:func:`~.base.classify_exit`);
* the last 4 KiB of its output kept as the log tail (sent with a failure report);
* every container removed after success, failure, time-out or cancellation, and this
  client's leftovers (a killed client's) removed before the first unit.

The image is the unit's ``image`` (an image id or ``name@sha256:...`` digest, which must
already be present locally: the executor never pulls), else the configured ``image``, else
``yadml-worker:<trainer version>`` (:func:`.worker_image.default_image`).

``DockerOptions(warm=True)`` keeps a container running :mod:`yadml_trainer.loop` between
units instead (:class:`~.warm_pool.WarmPool` with :class:`~.docker_workers.
ContainerLauncher`), so the interpreter start and ``import torch`` are paid once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from yadml_trainer.spool import OUTPUT, PROGRESS

from ..errors import ExecutionFailed
from .base import ExecutionRequest, ExecutionResult, Executor, classify_exit
from .docker_container import DockerEngine, DockerOptions, create_or_undo
from .docker_workers import ContainerLauncher
from .trainer_files import relay_progress, take_regular_file, trainer_args, write_task
from .warm_pool import WarmPool
from .worker_launcher import WorkerSpec

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

__all__ = ["TRAINER_COMMAND", "DockerExecutor"]

log = logging.getLogger(__name__)

TRAINER_COMMAND: tuple[str, ...] = ("python3", "-m", "yadml_trainer.trainer")


class DockerExecutor(Executor):
    """Run the trainer in a Docker container; see the module docstring.

    ``command``: what runs in place of ``python3 -m yadml_trainer.trainer`` (tests);
    ``docker_client``: an SDK client (default ``docker.from_env()`` on first use).
    """

    runtime = "docker"

    def __init__(
        self,
        options: DockerOptions | None = None,
        *,
        command: Sequence[str] = TRAINER_COMMAND,
        docker_client: DockerClient | None = None,
    ) -> None:
        self.options = options or DockerOptions()
        self.command = list(command)
        self.engine = DockerEngine(self.options, client=docker_client)
        self.warm_pool: WarmPool[Container] = WarmPool(
            launcher=ContainerLauncher(self.engine), spool_dir=self.options.spool_dir
        )
        self._cleaned = False
        self._lock = asyncio.Lock()

    def cleanup(self) -> int:
        """Remove every container this client started (left by a killed client). Blocking."""
        removed = self.engine.remove_leftovers()
        self._cleaned = True
        return removed

    def resolve_image(self, name: str | None) -> str:
        """The local image id for ``name`` (or the default image). Never pulls. Blocking."""
        return self.engine.resolve_image(name)

    async def prepare(self) -> None:
        """Remove this client's leftover containers; an unreachable engine is only logged
        here (each unit then fails with ``executor_error`` until it is back)."""
        try:
            await asyncio.to_thread(self.cleanup)
        except ExecutionFailed as exc:
            log.warning("%s", exc.detail)

    async def run(self, request: ExecutionRequest) -> ExecutionResult:
        async with self._lock:
            if not self._cleaned:
                await asyncio.to_thread(self.cleanup)
        image_id = await asyncio.to_thread(self.resolve_image, request.image)
        request.work_dir.mkdir(parents=True, exist_ok=True)
        request.output_path.unlink(missing_ok=True)
        if self.options.warm:
            spec = WorkerSpec(threads=request.threads, image=image_id)
            return await self.warm_pool.run(request, spec)
        return await self._run_cold(request, image_id)

    async def aclose(self) -> None:
        """Stop and remove the warm containers."""
        await self.warm_pool.aclose()

    # ------------------------------------------------------------------ one container per unit

    def _create_cold(self, request: ExecutionRequest, image_id: str, out_dir: Path) -> Container:
        task_path = write_task(request, request.work_dir)
        for path in (request.shard_path, request.weights_path, task_path):
            self.engine.readable(path)
        command = [
            *self.command,
            *trainer_args(
                shard="/unit/shard.safetensors",
                weights="/unit/weights.safetensors",
                task="/unit/task.json",
                output=f"/out/{OUTPUT}",
                threads=request.threads,
                progress=f"/out/{PROGRESS}",
            ),
        ]
        volumes = {
            str(request.shard_path): {"bind": "/unit/shard.safetensors", "mode": "ro"},
            str(request.weights_path): {"bind": "/unit/weights.safetensors", "mode": "ro"},
            str(task_path): {"bind": "/unit/task.json", "mode": "ro"},
            str(out_dir): {"bind": "/out", "mode": "rw"},
        }
        unit = request.work_dir.name
        container: Container = self.engine.docker().containers.create(
            image_id,
            command=command,
            volumes=volumes,
            labels=self.engine.labels(unit, "cold"),
            name=self.engine.container_name(f"{unit}-{uuid.uuid4().hex[:6]}"),
            **self.engine.hardening(request.threads),
        )
        return container

    async def _run_cold(self, request: ExecutionRequest, image_id: str) -> ExecutionResult:
        import docker.errors
        import requests.exceptions

        engine = self.engine
        out_dir = request.work_dir / "out"
        engine.owned_dir(out_dir)
        started = time.monotonic()
        try:
            container = await create_or_undo(
                lambda: self._create_cold(request, image_id, out_dir), engine.remove
            )
        except docker.errors.DockerException as exc:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise ExecutionFailed("executor_error", f"cannot create the container: {exc}") from exc
        relay = asyncio.create_task(relay_progress(out_dir / PROGRESS, request.progress_path))
        timed_out = oom = False
        code: int | None = None
        try:
            try:
                await asyncio.to_thread(container.start)
            except docker.errors.DockerException as exc:
                raise ExecutionFailed(
                    "executor_error", f"cannot start the container: {exc}"
                ) from exc
            try:
                status = await asyncio.to_thread(container.wait, timeout=request.timeout_s)
                code = int(status.get("StatusCode", -1))
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                timed_out = True
                await asyncio.to_thread(engine.kill, container)
            logs = await asyncio.to_thread(engine.logs, container)
            if code is not None and code != 0:
                oom = await asyncio.to_thread(engine.oom_killed, container)
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            await asyncio.shield(asyncio.to_thread(engine.remove, container))
        try:
            failure = classify_exit(
                code,
                log_tail=logs,
                oom_killed=oom,
                timed_out=timed_out,
                time_limit_s=request.timeout_s,
                memory_limit_mb=self.options.memory_mb,
                output_written=code == 0
                and take_regular_file(out_dir / OUTPUT, request.output_path),
            )
            if failure is not None:
                raise failure
            if request.progress_path is not None:
                with contextlib.suppress(OSError):
                    request.progress_path.write_text("1.0\n")
            return ExecutionResult(
                output_path=request.output_path,
                elapsed_s=time.monotonic() - started,
                log_tail=logs,
            )
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
