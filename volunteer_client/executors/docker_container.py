"""The Docker executor's containers: the volunteer's settings, the hardening every container
gets, and this client's access to the engine.

Every container runs with ``network_mode=none``, a read-only root filesystem (a small
``/tmp`` tmpfs), ``cap_drop=ALL``, ``no-new-privileges``, a private IPC namespace, a
non-root user (the client's own uid, or the image's user 10001 when the client is root), and
the pids/memory/CPU limits of :class:`DockerOptions`; optionally another OCI ``runtime``
(gVisor's ``runsc``). Each is labelled ``yadml.client=<client id>``, so
:meth:`DockerEngine.remove_leftovers` finds what a killed client left.

The Docker SDK is synchronous: :class:`DockerEngine`'s methods block and the executor calls
them in worker threads. The image is always resolved locally; nothing is ever pulled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ExecutionFailed
from .trainer_files import THREAD_VARS, tail_text
from .worker_image import default_image

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

__all__ = [
    "CONTAINER_UID",
    "LABEL_CLIENT",
    "LABEL_MODE",
    "LABEL_UNIT",
    "DockerEngine",
    "DockerOptions",
    "create_or_undo",
]

log = logging.getLogger(__name__)

_Made = TypeVar("_Made")

#: The image's non-root user (images/worker/Dockerfile), used when the client runs as root.
CONTAINER_UID = 10001
LABEL_CLIENT = "yadml.client"
LABEL_UNIT = "yadml.unit"
LABEL_MODE = "yadml.mode"


@dataclass(frozen=True)
class DockerOptions:
    """The volunteer's choices for the Docker executor.

    ``image``: the default image (tag, id or digest; None: ``yadml-worker:<trainer
    version>``); ``client_id``: the ``yadml.client`` label (one per client state dir);
    ``memory_mb``/``cpus``/``pids_limit``: each container's limits (None: no limit);
    ``runtime``: an OCI runtime name (``runsc``...); ``warm``: keep containers between units;
    ``spool_dir``: where warm containers' spools live (default: a temporary directory);
    ``tmpfs_mb``: the size of ``/tmp`` inside."""

    image: str | None = None
    client_id: str = "default"
    memory_mb: int | None = 2048
    cpus: float | None = None
    pids_limit: int | None = 256
    runtime: str | None = None
    warm: bool = False
    spool_dir: Path | None = None
    tmpfs_mb: int = 64


async def create_or_undo(create: Callable[[], _Made], undo: Callable[[_Made], None]) -> _Made:
    """Run ``create`` (which makes a container) in a thread. If the caller is cancelled
    meanwhile, wait for it anyway and ``undo`` what it made, so nothing is left behind."""
    future = asyncio.ensure_future(asyncio.to_thread(create))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(undo, await future)
        raise


class DockerEngine:
    """This client's containers on the Docker engine (``client``: an SDK client, default
    ``docker.from_env()`` on first use). Every method blocks."""

    def __init__(self, options: DockerOptions, *, client: DockerClient | None = None) -> None:
        self.options = options
        self._client = client

    def docker(self) -> DockerClient:
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

    def labels(self, unit: str, mode: str) -> dict[str, str]:
        return {LABEL_CLIENT: self.options.client_id, LABEL_UNIT: unit, LABEL_MODE: mode}

    def container_name(self, what: str) -> str:
        return f"yadml-{self.options.client_id[:8]}-{what}"

    def remove_leftovers(self) -> int:
        """Remove every container this client started (left by a killed client)."""
        removed = 0
        for container in self.docker().containers.list(
            all=True, filters={"label": f"{LABEL_CLIENT}={self.options.client_id}"}
        ):
            with contextlib.suppress(Exception):
                container.remove(force=True)
                removed += 1
        if removed:
            log.info("removed %d leftover container(s) of this client", removed)
        return removed

    def resolve_image(self, name: str | None) -> str:
        """The local image id for ``name`` (or the default image). Never pulls."""
        import docker.errors

        wanted = name or self.options.image or default_image()
        try:
            image = self.docker().images.get(wanted)
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

    # ------------------------------------------------------------------ the container's user

    @staticmethod
    def user() -> tuple[int, int]:
        """The container's uid/gid: the client's own, or the image's user under root."""
        if os.getuid() == 0:
            return CONTAINER_UID, CONTAINER_UID
        return os.getuid(), os.getgid()

    def owned_dir(self, path: Path) -> None:
        """(Re)create ``path`` empty and writable by the container's user only."""
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, mode=0o700)
        if os.getuid() == 0:
            os.chown(path, *self.user())

    def give(self, path: Path) -> None:
        """Let the container's user read (and own, under root) a file the client wrote."""
        path.chmod(0o644)
        if os.getuid() == 0:
            os.chown(path, *self.user())

    @staticmethod
    def readable(path: Path) -> None:
        """Let the container's user read an input file (its directories are not visible)."""
        mode = path.stat().st_mode
        if mode & 0o044 != 0o044:
            path.chmod(mode | 0o444)

    # ------------------------------------------------------------------ containers

    def hardening(self, threads: int | None) -> dict[str, Any]:
        """The ``containers.create`` options every container of this client gets."""
        uid, gid = self.user()
        o = self.options
        options: dict[str, Any] = {
            "user": f"{uid}:{gid}",
            "network_mode": "none",
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            # /tmp inside the container, not on this host
            "tmpfs": {"/tmp": f"rw,noexec,nosuid,nodev,size={o.tmpfs_mb}m"},  # noqa: S108
            "working_dir": "/tmp",  # noqa: S108
            "environment": {name: str(threads or 1) for name in THREAD_VARS},
            "ipc_mode": "private",
            "detach": True,
        }
        if o.pids_limit is not None:
            options["pids_limit"] = o.pids_limit
        if o.memory_mb is not None:
            options["mem_limit"] = f"{o.memory_mb}m"
            options["memswap_limit"] = f"{o.memory_mb}m"  # no swap on top
        if o.cpus is not None:
            options["nano_cpus"] = int(o.cpus * 1e9)
        if o.runtime:
            options["runtime"] = o.runtime
        return options

    @staticmethod
    def remove(container: Container) -> None:
        with contextlib.suppress(Exception):
            container.remove(force=True)

    @staticmethod
    def kill(container: Container) -> None:
        with contextlib.suppress(Exception):
            container.kill()

    @staticmethod
    def logs(container: Container) -> str:
        try:
            return tail_text(container.logs(stdout=True, stderr=True, tail=200))
        except Exception as exc:
            return f"(no logs: {exc})"

    @staticmethod
    def state(container: Container) -> dict[str, Any]:
        """The container's ``State`` (``Status``, ``ExitCode``, ``OOMKilled``...); {} when
        the engine cannot say."""
        try:
            container.reload()
        except Exception:
            return {}
        state = container.attrs.get("State", {})
        return state if isinstance(state, dict) else {}

    @classmethod
    def oom_killed(cls, container: Container) -> bool:
        return bool(cls.state(container).get("OOMKilled"))

    @classmethod
    def running(cls, container: Container) -> bool:
        return cls.state(container).get("Status") == "running"
