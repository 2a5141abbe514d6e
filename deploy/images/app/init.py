"""One-shot initialisation of a YADML deployment's shared state (the `init` service).

Several server replicas share one state directory (keys, blobs) and one database. Each
replica would create a missing key on its first start, and two replicas starting at once
would each make their own: this runs once, before any replica starts, and makes

- the work-signing key and the upload-grant secret (``work_server.signing``),
- the operator token file (unless ``YADML_OPERATOR_TOKEN`` is set),
- the database schema (migrated to the newest revision),
- ``<state>/public/fingerprint``: the key fingerprint volunteers pin (not a secret).

Idempotent: what exists is kept. Prints the fingerprint.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from work_server.auth import new_token
from work_server.db.engine import create_schema, make_engine, sqlite_url
from work_server.signing import ProjectSigner, UploadGrants


def _write_new(path: Path, text: str, mode: int) -> bool:
    """Create ``path`` with ``mode`` from the start; False when it exists already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return True


async def _schema(url: str) -> None:
    engine = make_engine(url)
    try:
        await create_schema(engine)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yadml-init", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--database-url", default=None, help="default: SQLite in the state dir")
    parser.add_argument("--project-name", default="YADML")
    args = parser.parse_args(argv)

    state: Path = args.state_dir
    for directory in (state, args.runs_dir, state / "public"):
        directory.mkdir(parents=True, exist_ok=True)
    signer = ProjectSigner.load_or_create(state, name=args.project_name)
    UploadGrants.load_or_create(state)
    if not os.environ.get("YADML_OPERATOR_TOKEN", "").strip() and _write_new(
        state / "operator_token", new_token() + "\n", 0o600
    ):
        print(f"operator token written to {state / 'operator_token'}", file=sys.stderr)
    asyncio.run(_schema(args.database_url or sqlite_url(state)))

    published = signer.project_info(time.time()).public_keys
    current = next(k.fingerprint for k in published if k.current)
    public = state / "public" / "fingerprint"
    tmp = public.with_name(".fingerprint.tmp")
    tmp.write_text(current + "\n")
    tmp.chmod(0o644)
    tmp.replace(public)
    print(f"project key fingerprint: {current}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
