"""Alembic environment: runs on the connection ``work_server.db.migrate`` hands over in
``config.attributes["connection"]`` (a sync facade of the server's async engine), so
migrations use exactly the engine, driver and settings the server uses."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from work_server.db import models as _models  # noqa: F401  (registers the tables)


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds the table instead
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations through work_server.db.migrate (yadml-server db upgrade), "
        "which passes the server's own database connection"
    )
run_migrations(connection)
