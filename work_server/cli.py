"""``yadml-server``: run the work server."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from aiohttp import web

from work_server.auth import new_token
from work_server.config import DaemonIntervals, ServerConfig
from work_server.web.cli import add_operator_parser, operator_main
from yadml_common.wire import IMAGE_DIGEST_PATTERN


def _operator_token(state_dir: Path) -> tuple[str, bool]:
    """From YADML_OPERATOR_TOKEN, else the one generated earlier, else a new one."""
    env = os.environ.get("YADML_OPERATOR_TOKEN", "").strip()
    if env:
        return env, False
    path = state_dir / "operator_token"
    if path.is_file():
        return path.read_text().strip(), False
    token = new_token()
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yadml-server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the work server and its daemons")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--state-dir", type=Path, default=Path("var"))
    serve.add_argument("--runs-dir", type=Path, default=Path("runs"))
    serve.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy async URL (default: SQLite in the state dir)",
    )
    serve.add_argument(
        "--public-url",
        default=None,
        help="base URL volunteers reach this server at (default: relative URLs)",
    )
    serve.add_argument("--data-dir", type=Path, default=None, help="MNIST IDX directory")
    serve.add_argument("--fashion-dir", type=Path, default=None, help="Fashion-MNIST directory")
    serve.add_argument("--max-running-jobs", type=int, default=1)
    serve.add_argument(
        "--retry-after", type=float, default=5.0, help="seconds a host without work is told to wait"
    )
    defaults = DaemonIntervals()
    for name in ("transitioner", "validator", "aggregator", "file_deleter"):
        serve.add_argument(
            f"--interval-{name.replace('_', '-')}",
            type=float,
            default=getattr(defaults, name),
            help=f"seconds between {name} runs",
        )
    serve.add_argument("--no-daemons", action="store_true", help="serve the API only")
    serve.add_argument(
        "--worker-image",
        default=None,
        metavar="DIGEST",
        help="worker image for docker units, by digest: sha256:<id> or name@sha256:<digest>",
    )
    serve.add_argument("--log-level", default="INFO")
    add_operator_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "operator":
        return operator_main(args)
    if args.worker_image is not None and not re.fullmatch(IMAGE_DIGEST_PATTERN, args.worker_image):
        print("--worker-image must be sha256:<id> or name@sha256:<digest>", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # aiohttp's access log would be one line per request; keep it at WARNING
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    token, generated = _operator_token(args.state_dir)
    if generated:
        print(
            f"operator token (saved in {args.state_dir / 'operator_token'}): {token}",
            file=sys.stderr,
            flush=True,
        )
    from work_server.app import create_app

    config = ServerConfig(
        state_dir=args.state_dir,
        runs_dir=args.runs_dir,
        operator_token=token,
        database_url=args.database_url,
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        data_dir=args.data_dir,
        fashion_dir=args.fashion_dir,
        max_running_jobs=args.max_running_jobs,
        retry_after_s=args.retry_after,
        run_daemons=not args.no_daemons,
        worker_image=args.worker_image,
        intervals=DaemonIntervals(
            transitioner=args.interval_transitioner,
            validator=args.interval_validator,
            aggregator=args.interval_aggregator,
            file_deleter=args.interval_file_deleter,
        ),
    )
    web.run_app(
        create_app(config),
        host=args.host,
        port=args.port,
        print=None,
        handle_signals=True,
        shutdown_timeout=5,
    )
    return 0
