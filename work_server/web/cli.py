"""``yadml-server operator create``: the web pages' operators are made here, never by default.

yadml-server operator create --state-dir var/ --username alice            # asks twice
printf '%s\\n' "$PW" | yadml-server operator create --username alice --password-stdin
yadml-server operator create --username alice --reset                     # new password
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from pathlib import Path

from work_server.db.engine import create_schema, make_engine, make_sessionmaker, sqlite_url
from work_server.errors import DomainError
from work_server.services import audit
from work_server.services.principal import Principal
from work_server.web.auth import Passwords, check_new_credentials, create_operator


def add_operator_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    op = sub.add_parser("operator", help="manage the operators of the web pages")
    op_sub = op.add_subparsers(dest="operator_command", required=True)
    create = op_sub.add_parser("create", help="create an operator (or --reset a password)")
    create.add_argument("--state-dir", type=Path, default=Path("var"))
    create.add_argument(
        "--database-url", default=None, help="SQLAlchemy async URL (default: SQLite in state dir)"
    )
    create.add_argument("--username", required=True)
    create.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin",
    )
    create.add_argument("--reset", action="store_true", help="set the password of an existing one")


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise DomainError("the passwords differ")
    return first


async def _create(args: argparse.Namespace, password: str) -> int:
    args.state_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(args.database_url or sqlite_url(args.state_dir))
    try:
        await create_schema(engine)
        async with make_sessionmaker(engine)() as session:
            reset, create = audit.Action.operator_password, audit.Action.operator_create
            audit.record(  # committed by create_operator, with the operator
                session,
                actor=Principal.cli(),
                action=reset if args.reset else create,
                target=f"operator:{args.username}",
                client_ip=None,
                now=time.time(),
            )
            op = await create_operator(
                session,
                args.username,
                password,
                passwords=Passwords(),
                now=time.time(),
                replace=args.reset,
            )
    finally:
        await engine.dispose()
    verb = "password set for" if args.reset else "created"
    print(f"operator {op.username!r} {verb}; log in at <server>/login", file=sys.stderr)
    return 0


def operator_main(args: argparse.Namespace) -> int:
    try:
        password = _read_password(args)
        check_new_credentials(args.username, password)
        return asyncio.run(_create(args, password))
    except DomainError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
