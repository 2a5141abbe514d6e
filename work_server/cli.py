"""``yadml-server``: run the work server."""

from __future__ import annotations

import argparse
import logging
import os
import re
import ssl
import sys
from dataclasses import fields
from pathlib import Path

from aiohttp import web

from work_server.access_log import ACCESS_LOGGER_NAME, RedactingAccessLogger
from work_server.auth import new_token
from work_server.config import DEFAULT_RUNS_DIR, DEFAULT_STATE_DIR, DaemonIntervals, ServerConfig
from work_server.db.cli import add_db_parser, db_main
from work_server.key_cli import add_key_parser, key_main
from work_server.ratelimit import Rate
from work_server.token_cli import add_token_parser, token_main
from work_server.web.cli import add_operator_parser, operator_main
from yadml_common.fsutil import atomic_write
from yadml_common.wire import IMAGE_DIGEST_PATTERN

#: What each ``DaemonIntervals`` field paces, for ``--interval-<field>``'s help.
_INTERVAL_HELP = {
    "aggregator": "round closer, work generator and job finisher",
    "file_deleter": "file deleter",
}


def _operator_token(state_dir: Path) -> tuple[str, bool]:
    """From YADML_OPERATOR_TOKEN, else the one generated earlier, else a new one."""
    env = os.environ.get("YADML_OPERATOR_TOKEN", "").strip()
    if env:
        return env, False
    path = state_dir / "operator_token"
    if path.is_file():
        return path.read_text().strip(), False
    token = new_token()
    # exclusive: server processes that start at once on a shared state directory all end up
    # with the first one's token
    try:
        atomic_write(path, token + "\n", mode=0o600, exclusive=True)
    except FileExistsError:
        return path.read_text().strip(), False
    return token, True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yadml-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the work server and its daemons")
    # every default comes from ServerConfig: the config is the one place that states them
    d = ServerConfig(state_dir=DEFAULT_STATE_DIR, runs_dir=DEFAULT_RUNS_DIR, operator_token="")
    serve.add_argument("--host", default=d.host)
    serve.add_argument("--port", type=int, default=d.port)
    serve.add_argument("--state-dir", type=Path, default=d.state_dir)
    serve.add_argument("--runs-dir", type=Path, default=d.runs_dir)
    serve.add_argument(
        "--database-url",
        default=d.database_url,
        help="SQLAlchemy async URL (default: SQLite in the state dir); several server "
        "processes may share one postgresql+asyncpg:// database",
    )
    serve.add_argument(
        "--public-url",
        default=d.public_url,
        help="base URL volunteers reach this server at (default: relative URLs)",
    )
    serve.add_argument("--data-dir", type=Path, default=d.data_dir, help="MNIST IDX directory")
    serve.add_argument(
        "--fashion-dir", type=Path, default=d.fashion_dir, help="Fashion-MNIST directory"
    )
    serve.add_argument("--max-running-jobs", type=int, default=d.max_running_jobs)
    serve.add_argument(
        "--retry-after",
        type=float,
        default=d.retry_after_s,
        help="seconds a host without work is told to wait, at least (see --idle-polls-per-s)",
    )
    serve.add_argument(
        "--idle-polls-per-s",
        type=float,
        default=d.idle_polls_per_s,
        help="budget for all hosts' idle polls: the wait grows with the active hosts",
    )
    serve.add_argument(
        "--max-retry-after",
        type=float,
        default=d.max_retry_after_s,
        help="the longest wait a host is told",
    )
    for field in fields(DaemonIntervals):
        serve.add_argument(
            f"--interval-{field.name.replace('_', '-')}",
            type=float,
            default=getattr(d.intervals, field.name),
            help=f"seconds between runs of the {_INTERVAL_HELP.get(field.name, field.name)}",
        )
    serve.add_argument(
        "--no-daemons",
        action="store_true",
        default=not d.run_daemons,
        help="serve the API only",
    )
    serve.add_argument(
        "--worker-image",
        default=d.worker_image,
        metavar="DIGEST",
        help="worker image for docker units, by digest: sha256:<id> or name@sha256:<digest>",
    )
    serve.add_argument(
        "--vm-image",
        default=d.vm_image,
        metavar="ID",
        help="VM image for vm units: yadml-vm@sha256:<raw disk sha256> (its manifest's id)",
    )
    serve.add_argument("--project-name", default=d.project_name, help="shown to attaching clients")
    serve.add_argument("--tls-cert", type=Path, default=d.tls_cert, help="serve HTTPS: PEM chain")
    serve.add_argument("--tls-key", type=Path, default=d.tls_key, help="serve HTTPS: PEM key")
    for flag, attr, what in (
        ("--rate-register", "rate_register_per_ip", "registrations per client IP"),
        ("--rate-work-ip", "rate_work_per_ip", "work requests per client IP"),
        ("--rate-work-host", "rate_work_per_host", "work requests per host"),
    ):
        rate: Rate = getattr(d, attr)
        serve.add_argument(
            flag,
            dest=attr,
            type=Rate.parse,
            default=rate,
            metavar="RATE/BURST",
            help=f"{what}: tokens per second / burst (default {rate.rate:g}/{rate.burst:g})",
        )
    serve.add_argument(
        "--trusted-proxy",
        action="append",
        default=sorted(d.trusted_proxies),
        metavar="IP",
        help="believe X-Forwarded-For from this reverse proxy address (repeatable)",
    )
    serve.add_argument("--log-level", default="INFO")
    serve.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one INFO line per request in the server log: client IP, method, path without "
        "its query string, status, bytes, seconds; never a header (default: on)",
    )
    add_operator_parser(sub)
    add_token_parser(sub)
    add_key_parser(sub)
    add_db_parser(sub)
    return parser


def server_config(args: argparse.Namespace, *, operator_token: str) -> ServerConfig:
    """The config of ``serve`` from its parsed options."""
    return ServerConfig(
        state_dir=args.state_dir,
        runs_dir=args.runs_dir,
        operator_token=operator_token,
        database_url=args.database_url,
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        data_dir=args.data_dir,
        fashion_dir=args.fashion_dir,
        max_running_jobs=args.max_running_jobs,
        retry_after_s=args.retry_after,
        idle_polls_per_s=args.idle_polls_per_s,
        max_retry_after_s=args.max_retry_after,
        run_daemons=not args.no_daemons,
        worker_image=args.worker_image,
        vm_image=args.vm_image,
        project_name=args.project_name,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        rate_register_per_ip=args.rate_register_per_ip,
        rate_work_per_ip=args.rate_work_per_ip,
        rate_work_per_host=args.rate_work_per_host,
        trusted_proxies=frozenset(args.trusted_proxy),
        intervals=DaemonIntervals(
            transitioner=args.interval_transitioner,
            validator=args.interval_validator,
            aggregator=args.interval_aggregator,
            file_deleter=args.interval_file_deleter,
        ),
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "operator":
        return operator_main(args)
    if args.command == "token":
        return token_main(args)
    if args.command == "key":
        return key_main(args)
    if args.command == "db":
        return db_main(args)
    if args.worker_image is not None and not re.fullmatch(IMAGE_DIGEST_PATTERN, args.worker_image):
        print("--worker-image must be sha256:<id> or name@sha256:<digest>", file=sys.stderr)
        return 2
    if args.vm_image is not None and not re.fullmatch(IMAGE_DIGEST_PATTERN, args.vm_image):
        print("--vm-image must be yadml-vm@sha256:<hex> (the manifest's id)", file=sys.stderr)
        return 2
    if (args.tls_cert is None) != (args.tls_key is None):
        print("--tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # APScheduler writes two lines per daemon run (most of a server's log otherwise)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    token, generated = _operator_token(args.state_dir)
    if generated:
        print(
            f"operator token (saved in {args.state_dir / 'operator_token'}): {token}",
            file=sys.stderr,
            flush=True,
        )
    from work_server import keys
    from work_server.app import create_app

    config = server_config(args, operator_token=token)
    ssl_context = None
    if config.tls_cert is not None and config.tls_key is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
        ssl_context.load_cert_chain(config.tls_cert, config.tls_key)
    app = create_app(config)
    print(
        f"project key fingerprint: {app[keys.SIGNER].fingerprint} "
        "(volunteers: yadml-client attach URL --fingerprint ...)",
        file=sys.stderr,
        flush=True,
    )
    web.run_app(
        app,
        # our access logger: no query string, no header (work_server/access_log.py)
        access_log=logging.getLogger(ACCESS_LOGGER_NAME) if args.access_log else None,
        access_log_class=RedactingAccessLogger.behind(config.trusted_proxies),
        host=args.host,
        port=args.port,
        ssl_context=ssl_context,
        print=None,
        handle_signals=True,
        shutdown_timeout=5,
    )
    return 0
