"""Warm containers: the Docker executor's workers for :class:`~.warm_pool.WarmPool`.

A worker is a container of the unit's image running ``python3 -m yadml_trainer.loop /spool``
with the hardening of :mod:`.docker_container`, its spool directory bind-mounted read-write
at ``/spool``. The container sees nothing else of this computer, so a unit's inputs are
*copied* into its spool (``shard.safetensors``, ``weights.safetensors``, ``task.json``), and
its output and progress are taken from there without following links.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from yadml_trainer.spool import OUTPUT, PROGRESS

from ..errors import ExecutionFailed
from .base import ExecutionRequest
from .docker_container import DockerEngine, create_or_undo
from .trainer_files import copy_progress, take_regular_file, trainer_args, write_task
from .worker_launcher import WorkerLauncher, WorkerReport, WorkerSpec

if TYPE_CHECKING:
    from docker.models.containers import Container

__all__ = ["LOOP_COMMAND", "SPOOL_MOUNT", "ContainerLauncher"]

LOOP_COMMAND: tuple[str, ...] = ("python3", "-m", "yadml_trainer.loop")
SPOOL_MOUNT = "/spool"
#: exit statuses above this mean "killed by signal (status - 128)" (what Docker reports)
_SIGNAL_BASE = 128


class ContainerLauncher(WorkerLauncher["Container"]):
    """Starts warm containers through ``engine``; see the module docstring."""

    spool_prefix = "yadml-docker-"
    #: asking the engine is an API call: not every poll
    liveness_interval_s = 0.5

    def __init__(self, engine: DockerEngine) -> None:
        self.engine = engine
        self.memory_limit_mb = engine.options.memory_mb

    async def start(self, spool: Path, spec: WorkerSpec) -> Container:
        import docker.errors

        image = spec.image
        if image is None:  # pragma: no cover - the executor always resolves one
            raise ExecutionFailed("executor_error", "a warm container needs an image")

        def create() -> Container:
            container: Container = self.engine.docker().containers.run(
                image,
                command=[*LOOP_COMMAND, SPOOL_MOUNT],
                volumes={str(spool): {"bind": SPOOL_MOUNT, "mode": "rw"}},
                labels=self.engine.labels("warm", "warm"),
                name=self.engine.container_name(f"warm-{spool.name}"),
                **self.engine.hardening(spec.threads),
            )
            return container

        try:
            return await create_or_undo(create, self.engine.remove)
        except docker.errors.DockerException as exc:
            raise ExecutionFailed("executor_error", f"cannot start the container: {exc}") from exc

    async def alive(self, worker: Container) -> bool:
        return await asyncio.to_thread(self.engine.running, worker)

    async def report(self, worker: Container) -> WorkerReport:
        state = await asyncio.to_thread(self.engine.state, worker)
        output = await asyncio.to_thread(self.engine.logs, worker)
        code = state.get("ExitCode")
        if state.get("Status") == "running" or not isinstance(code, int):
            return WorkerReport(oom_killed=bool(state.get("OOMKilled")), output=output)
        killed = code > _SIGNAL_BASE
        return WorkerReport(
            exit_status=None if killed else code,
            signal=code - _SIGNAL_BASE if killed else None,
            oom_killed=bool(state.get("OOMKilled")),
            output=output,
        )

    async def stop(self, worker: Container) -> None:
        await asyncio.to_thread(self.engine.remove, worker)

    def make_dir(self, path: Path) -> None:
        self.engine.owned_dir(path)

    def seen_as(self, spool: Path) -> str:
        return SPOOL_MOUNT

    def stage(self, request: ExecutionRequest, unit_dir: Path, seen_as: str) -> list[str]:
        shutil.copyfile(request.shard_path, unit_dir / "shard.safetensors")
        shutil.copyfile(request.weights_path, unit_dir / "weights.safetensors")
        write_task(request, unit_dir)
        return trainer_args(
            shard=f"{seen_as}/shard.safetensors",
            weights=f"{seen_as}/weights.safetensors",
            task=f"{seen_as}/task.json",
            output=f"{seen_as}/{OUTPUT}",
            threads=request.threads,
            progress=f"{seen_as}/{PROGRESS}",
        )

    def hand_over(self, unit_dir: Path) -> None:
        for path in unit_dir.iterdir():
            self.engine.give(path)

    def progress_file(self, unit_dir: Path) -> Path | None:
        return unit_dir / PROGRESS

    def collect(self, request: ExecutionRequest, unit_dir: Path) -> bool:
        if request.progress_path is not None:  # the relay may not have seen the last value
            copy_progress(unit_dir / PROGRESS, request.progress_path)
        return take_regular_file(unit_dir / OUTPUT, request.output_path)
