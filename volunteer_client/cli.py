"""``yadml-client``: attach to a work server, run the daemon, show or drop the state.

::

    yadml-client [--state-dir DIR] attach URL [--name NAME] [--public-name NAME]
                                          [--runtimes process,docker]
                                          [--fingerprint SHA256:...] [--ca-cert FILE]
    yadml-client [--state-dir DIR] run [--executor process] [--max-concurrent 1] [--threads N]
                                       [--once] [--heartbeat-s 30] [--backoff-max-s 60]
                                       [--log-level INFO]
                                       [--docker-image IMG] [--docker-runtime runsc]
                                       [--memory-mb 2048] [--cpus N] [--pids-limit 256] [--cold]
                                       [--vm-driver auto|qemu|virtualbox] [--vm-image-dir DIR]
    yadml-client [--state-dir DIR] status
    yadml-client [--state-dir DIR] detach

Exit status: 0 ok, 1 error (message on stderr), 2 bad usage. Which executor serves each
runtime, and how these options configure it, is :mod:`volunteer_client.executor_table`.
Testing entry points reuse :func:`build_parser` and :func:`main` with extra ``run`` options
and a wrapper around the executor (:mod:`volunteer_client.testing`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import secrets
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from yadml_common.signing import SignatureError, WorkVerifier, fingerprint, public_key_from_b64
from yadml_common.wire import HostRegisterRequest, ProjectInfo, Runtime

from . import cli_args
from .api import ServerAPI
from .daemon import Daemon
from .errors import ExecutionFailed, YadmlClientError
from .executor_table import EXECUTORS, build_executor
from .executors import Executor
from .state import Attachment, StateDir, default_state_dir

__all__ = ["ExecutorWrapper", "RunArguments", "build_parser", "detect_host", "main"]

log = logging.getLogger("volunteer_client")

#: Adds options to the ``run`` command (a testing entry point's).
RunArguments = Callable[[argparse.ArgumentParser], None]
#: Wraps the executor ``run`` built, given the parsed arguments (a testing entry point's).
ExecutorWrapper = Callable[[Executor, argparse.Namespace], Executor]


def build_parser(
    *, prog: str = "yadml-client", run_arguments: RunArguments | None = None
) -> argparse.ArgumentParser:
    """The command line; ``run_arguments`` adds options to ``run``."""
    parser = argparse.ArgumentParser(
        prog=prog, description="YADML volunteer client: train work units for a server."
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="state directory (default: $YADML_CLIENT_STATE_DIR or ~/.local/state/yadml-client)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    attach = sub.add_parser("attach", help="register this computer with a work server")
    attach.add_argument("url", help="server URL, e.g. http://127.0.0.1:8080")
    attach.add_argument(
        "--name",
        default=None,
        help="a private name for this computer, seen only by the project's operators and "
        "this client (default: an anonymous host-<6 hex>; the hostname is never sent)",
    )
    attach.add_argument(
        "--public-name",
        type=cli_args.public_name,
        default=None,
        help="a public display name, listed with this computer's credit on the project's "
        "status page (default: none; the computer is listed nowhere public)",
    )
    attach.add_argument(
        "--runtimes", type=cli_args.runtimes, default=["process"], help="e.g. process,docker"
    )
    attach.add_argument(
        "--fingerprint",
        default=None,
        help="the project's key fingerprint (SHA256:...), from the project's web site; "
        "without it the key is trusted on first use",
    )
    attach.add_argument(
        "--ca-cert",
        type=Path,
        default=None,
        help="PEM CA certificate the server's HTTPS certificate must chain to",
    )

    run = sub.add_parser("run", help="work for the attached server")
    run.add_argument(
        "--executor", choices=list(EXECUTORS), default="process", help="(default: process)"
    )
    run.add_argument("--max-concurrent", type=cli_args.positive_int, default=1)
    run.add_argument("--threads", type=cli_args.positive_int, default=None, help="threads per unit")
    run.add_argument("--once", action="store_true", help="one pass, then exit")
    run.add_argument("--heartbeat-s", type=cli_args.positive_float, default=30.0)
    run.add_argument("--backoff-max-s", type=cli_args.positive_float, default=60.0)
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    docker = run.add_argument_group("docker executor (the volunteer's limits per unit)")
    docker.add_argument("--docker-image", default=None, help="default: yadml-worker:<version>")
    docker.add_argument("--docker-runtime", default=None, help="OCI runtime, e.g. runsc (gVisor)")
    docker.add_argument(
        "--memory-mb", type=cli_args.positive_int, default=2048, help="memory limit"
    )
    docker.add_argument("--cpus", type=cli_args.positive_float, default=None, help="CPU limit")
    docker.add_argument(
        "--pids-limit", type=cli_args.positive_int, default=256, help="process limit"
    )
    docker.add_argument(
        "--cold",
        action="store_true",
        help="a fresh container (docker) or process (process) per unit (default: one warm "
        "container or trainer process takes unit after unit)",
    )
    vm = run.add_argument_group("vm executor (--memory-mb and --cpus size the VM)")
    vm.add_argument(
        "--vm-driver",
        choices=["auto", "qemu", "virtualbox"],
        default="auto",
        help="hypervisor (default: the first usable, QEMU first)",
    )
    vm.add_argument(
        "--vm-image-dir",
        type=Path,
        default=None,
        help="where the VM images and their manifest are (default: $YADML_VM_IMAGE_DIR or "
        "the checkout's build/vm, made by `make vm-image`)",
    )
    if run_arguments is not None:
        run_arguments(run)

    sub.add_parser("status", help="show the attachment, the cache and units in flight")
    sub.add_parser("detach", help="forget the server, its token and units in flight")
    return parser


def anonymous_name() -> str:
    """A fresh random host name: volunteers are anonymous unless they choose a name."""
    return f"host-{secrets.token_hex(3)}"


def detect_host(
    name: str | None, runtimes: Sequence[Runtime], public_name: str | None = None
) -> HostRegisterRequest:
    """What the client tells the server about this computer: never its hostname, and a
    public name only when the volunteer chose one."""
    memory_mb = 1024
    with contextlib.suppress(ValueError, OSError, AttributeError):
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    return HostRegisterRequest(
        name=(name or anonymous_name())[:128],
        display_name=public_name,
        os=(platform.system() or "unknown")[:128],
        arch=(platform.machine() or "unknown")[:128],
        cpus=max(1, min(4096, os.cpu_count() or 1)),
        memory_mb=max(64, min(16 * 1024 * 1024, memory_mb)),
        runtimes=list(runtimes),
    )


def pin_project_keys(info: ProjectInfo, expected: str | None) -> list[str]:
    """The project's current public key (base64) to pin, after checking its fingerprint.

    The fingerprint is computed here from the key itself; the server's own claim is not
    trusted. Raises ``SignatureError`` when ``expected`` is given and differs.
    """
    current = [k for k in info.public_keys if k.current]
    if len(current) != 1:
        raise SignatureError("the server did not publish exactly one current project key")
    computed = fingerprint(public_key_from_b64(current[0].public_key))
    if expected is not None and computed != expected.strip():
        raise SignatureError(
            f"project key fingerprint is {computed}, not the expected {expected.strip()}: "
            "refusing to attach (wrong server, or someone in between)"
        )
    return [current[0].public_key]


async def _attach(
    state: StateDir,
    url: str,
    name: str | None,
    runtimes: list[Runtime],
    expected_fingerprint: str | None = None,
    ca_cert: Path | None = None,
    public_name: str | None = None,
) -> int:
    with state.lock():
        existing = state.load_attachment()
        if existing is not None:
            print(
                f"already attached to {existing.server_url} as host {existing.host_id}; "
                "run 'yadml-client detach' first",
                file=sys.stderr,
            )
            return 1
        runtimes = _usable_runtimes(runtimes)
        request = detect_host(name, runtimes, public_name)
        ca = str(await asyncio.to_thread(ca_cert.resolve)) if ca_cert is not None else None
        async with ServerAPI(base_url=url, ca_cert=ca) as api:
            info = await api.project()
            pinned = pin_project_keys(info, expected_fingerprint)
            response = await api.register(request)
        state.save_attachment(
            Attachment(
                server_url=url,
                host_id=response.host_id,
                host_token=response.host_token,
                name=request.name,
                runtimes=list(runtimes),
                project_keys=pinned,
                ca_cert=ca,
            )
        )
    key = fingerprint(public_key_from_b64(pinned[0]))
    if expected_fingerprint is None:
        print(
            f"project {info.name!r} key fingerprint: {key}\n"
            "  pinned on first use: compare it with the fingerprint the project publishes, "
            "or attach with --fingerprint to check it automatically"
        )
    else:
        print(f"project {info.name!r} key fingerprint: {key} (matches --fingerprint)")
    public = f", public name {request.display_name!r}" if request.display_name else ""
    print(f"attached to {url} as host {response.host_id} ({request.name}){public}")
    return 0


def _usable_runtimes(runtimes: list[Runtime]) -> list[Runtime]:
    """``runtimes`` without those this computer cannot provide (they are not advertised);
    raises ``ExecutionFailed`` when none is left."""
    kept: list[Runtime] = []
    refused: list[tuple[Runtime, ExecutionFailed]] = []
    for runtime in runtimes:
        probe = EXECUTORS[runtime].probe
        if probe is None:
            kept.append(runtime)
            continue
        try:
            log.info("%s runtime: %s", runtime, probe())
        except ExecutionFailed as exc:
            refused.append((runtime, exc))
        else:
            kept.append(runtime)
    if not kept and refused:
        raise refused[0][1]
    for runtime, failure in refused:
        print(f"not advertising the {runtime} runtime: {failure.detail}", file=sys.stderr)
    return kept


async def _run(
    state: StateDir, args: argparse.Namespace, wrap_executor: ExecutorWrapper | None = None
) -> int:
    with state.lock():
        attachment = state.require_attachment()
        if not attachment.project_keys:
            raise SignatureError(
                "this attachment has no pinned project key (made by an older client): "
                "run 'yadml-client detach' and attach again"
            )
        verifier = WorkVerifier.from_b64(attachment.project_keys)
        executor = build_executor(args.executor, state.root, args)
        if wrap_executor is not None:
            executor = wrap_executor(executor, args)
        await executor.prepare()
        if executor.runtime not in attachment.runtimes:
            log.warning(
                "executor %s is not among the attached runtimes %s",
                executor.runtime,
                attachment.runtimes,
            )
        async with ServerAPI(
            base_url=attachment.server_url, token=attachment.host_token, ca_cert=attachment.ca_cert
        ) as api:
            daemon = Daemon(
                api=api,
                state=state,
                executor=executor,
                max_concurrent=args.max_concurrent,
                threads=args.threads,
                heartbeat_s=args.heartbeat_s,
                backoff_max_s=args.backoff_max_s,
                verifier=verifier,
            )
            log.info(
                "host %d working for %s (executor %s, %d at a time)",
                attachment.host_id,
                attachment.server_url,
                args.executor,
                args.max_concurrent,
            )
            if args.once:
                try:
                    count = await daemon.run_once()
                finally:
                    await executor.aclose()
                log.info("done: %d unit(s)", count)
                return 0
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            try:
                await daemon.run_forever(stop)
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
                await executor.aclose()
    return 0


def _status(state: StateDir) -> int:
    attachment = state.load_attachment()
    if attachment is None:
        print(f"state dir: {state.root} (not attached)")
    else:
        print(f"state dir: {state.root}")
        print(f"server:    {attachment.server_url}")
        print(f"host:      {attachment.host_id} ({attachment.name})")
        print(f"runtimes:  {','.join(attachment.runtimes)}")
        for key in attachment.project_keys:
            print(f"key:       {fingerprint(public_key_from_b64(key))}")
    print(f"cache:     {state.cache.total_bytes()} bytes in {len(state.cache.entries())} blob(s)")
    records = state.units.load_all() if state.units.root.is_dir() else []
    print(f"units:     {len(records)} in flight")
    for record in records:
        a = record.assignment
        print(
            f"  result {a.result_id}: {record.status} (job {a.job_id} round {a.round}, "
            f"deadline {a.deadline.isoformat()})"
        )
    return 0


def _detach(state: StateDir) -> int:
    with state.lock():
        attachment = state.load_attachment()
        if attachment is None:
            print("not attached", file=sys.stderr)
            return 1
        for record in state.units.load_all():
            state.units.remove(record.result_id)
        state.remove_attachment()
    print(f"detached from {attachment.server_url} (host {attachment.host_id})")
    return 0


def main(
    argv: Sequence[str] | None = None,
    *,
    parser: argparse.ArgumentParser | None = None,
    wrap_executor: ExecutorWrapper | None = None,
) -> int:
    """Run the command line (``parser``: :func:`build_parser`'s by default;
    ``wrap_executor``: wraps the executor of ``run``)."""
    args = (parser or build_parser()).parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    state = StateDir(args.state_dir if args.state_dir is not None else default_state_dir())
    try:
        if args.command == "attach":
            return asyncio.run(
                _attach(
                    state,
                    args.url,
                    args.name,
                    args.runtimes,
                    args.fingerprint,
                    args.ca_cert,
                    args.public_name,
                )
            )
        if args.command == "run":
            return asyncio.run(_run(state, args, wrap_executor))
        if args.command == "status":
            return _status(state)
        return _detach(state)
    except (YadmlClientError, ValueError) as exc:
        print(f"yadml-client: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
