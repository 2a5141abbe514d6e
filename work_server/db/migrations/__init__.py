"""Alembic migrations of the work server's schema (``work_server.db.migrate`` runs them)."""
