"""``yadml-server token create|list|revoke``: operators' personal API tokens, at the server.

yadml-server token create --operator alice --scope read,jobs --expires-in 30d --note "CI"
yadml-server token list [--operator alice]
yadml-server token revoke 7

``create`` prints the token alone on stdout (the only time it is shown; the database keeps
its sha256) and what it is on stderr. Each change is in the audit log, by the shell user
(``via`` cli). The server's own ``/api/v1/tokens`` and ``/tokens`` page do the same.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.db.engine import create_schema, make_engine, make_sessionmaker, sqlite_url
from work_server.errors import DomainError
from work_server.services import api_tokens
from work_server.services.principal import Principal


def add_token_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = sub.add_parser("token", help="manage operators' personal API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="make a token (shown once)")
    create.add_argument("--operator", required=True, help="the owner's user name")
    create.add_argument("--scope", required=True, help="comma-separated: read, jobs, hosts, admin")
    create.add_argument(
        "--expires-in", default="never", help="e.g. 30d, 12h, 2w, 90m (default: never)"
    )
    create.add_argument("--note", default="", help="what the token is for")
    listing = token_sub.add_parser("list", help="list tokens (never their secrets)")
    listing.add_argument("--operator", default=None, help="only this operator's")
    revoke = token_sub.add_parser("revoke", help="revoke a token at once")
    revoke.add_argument("token_id", type=int, metavar="ID")
    for cmd in (create, listing, revoke):
        cmd.add_argument("--state-dir", type=Path, default=Path("var"))
        cmd.add_argument(
            "--database-url",
            default=None,
            help="SQLAlchemy async URL (default: SQLite in state dir)",
        )


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M")


async def _create(session: AsyncSession, args: argparse.Namespace) -> int:
    scopes = api_tokens.parse_scopes(args.scope)
    token, view = await api_tokens.create_token(
        session,
        operator=args.operator,
        scopes=scopes,
        expires_in_s=api_tokens.parse_duration(args.expires_in),
        note=args.note,
        actor=Principal.cli(),
        client_ip=None,
        now=time.time(),
    )
    print(token)
    print(
        f"token {view.token.id} for {view.operator}: scopes {','.join(view.scopes)}, "
        f"expires {_when(view.token.expires_at) if view.token.expires_at else 'never'}. "
        "Shown once: only its hash is kept.",
        file=sys.stderr,
    )
    return 0


async def _list(session: AsyncSession, args: argparse.Namespace) -> int:
    now = time.time()
    views = await api_tokens.list_tokens(session, operator=args.operator)
    print(
        f"{'id':>5}  {'operator':16} {'scopes':22} {'state':8} {'expires':16} {'last used':16} note"
    )
    for v in views:
        t = v.token
        print(
            f"{t.id:>5}  {v.operator:16} {','.join(v.scopes):22} {v.state(now):8} "
            f"{_when(t.expires_at):16} {_when(t.last_used_at):16} {t.note}"
        )
    return 0


async def _revoke(session: AsyncSession, args: argparse.Namespace) -> int:
    view = await api_tokens.revoke_token(
        session, args.token_id, actor=Principal.cli(), client_ip=None, now=time.time()
    )
    print(f"token {view.token.id} of {view.operator} revoked", file=sys.stderr)
    return 0


_COMMANDS: dict[str, Callable[[AsyncSession, argparse.Namespace], Awaitable[int]]] = {
    "create": _create,
    "list": _list,
    "revoke": _revoke,
}


async def _run(args: argparse.Namespace) -> int:
    if args.database_url is None:
        args.state_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(args.database_url or sqlite_url(args.state_dir))
    try:
        await create_schema(engine)
        async with make_sessionmaker(engine)() as session:
            return await _COMMANDS[args.token_command](session, args)
    finally:
        await engine.dispose()


def token_main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except DomainError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
