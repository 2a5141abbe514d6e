"""``yadml-server db``: the schema's migrations (Alembic, SQLite and PostgreSQL alike).

yadml-server db upgrade --database-url postgresql+asyncpg://user:pw@db/yadml   # to head
yadml-server db current --state-dir var/                                       # SQLite
yadml-server db check --database-url ...        # exit 1 unless the schema matches models.py
yadml-server db revision -m "add a column"      # developers: autogenerate a migration

``serve`` upgrades to head by itself at start; ``db upgrade`` is for deployments that migrate
as a separate step before starting the servers.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from work_server.db import migrate
from work_server.db.engine import make_engine, sqlite_url


def add_db_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="database schema migrations")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    helps = {
        "upgrade": "migrate the database to the newest schema (or --revision)",
        "current": "print the database's schema revision",
        "check": "exit 1 when the database's schema differs from the models",
        "revision": "write a new migration from the models (developers)",
    }
    for name, text in helps.items():
        cmd = db_sub.add_parser(name, help=text)
        cmd.add_argument("--state-dir", type=Path, default=Path("var"))
        cmd.add_argument(
            "--database-url",
            default=None,
            help="SQLAlchemy async URL (default: SQLite in the state dir)",
        )
        if name == "upgrade":
            cmd.add_argument("--revision", default="head")
        if name == "revision":
            cmd.add_argument("-m", "--message", required=True)


async def _run(args: argparse.Namespace) -> int:
    if args.database_url is None:
        args.state_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(args.database_url or sqlite_url(args.state_dir))
    try:
        if args.db_command == "upgrade":
            print(f"at revision {await migrate.upgrade(engine, args.revision)}")
        elif args.db_command == "current":
            print(await migrate.current_revision(engine) or "(empty database)")
        elif args.db_command == "check":
            diff = await migrate.schema_diff(engine)
            for item in diff:
                print(item)
            if diff:
                print(f"{len(diff)} difference(s) between the database and the models")
                return 1
            print("the database's schema matches the models")
        else:
            await migrate.new_revision(engine, args.message)
    finally:
        await engine.dispose()
    return 0


def db_main(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))
