"""Shared helpers of the deployment kit's tests (deploy/)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"


def compose_available() -> tuple[bool, str]:
    """Whether ``docker compose`` (v2) answers; the reason when it does not."""
    if shutil.which("docker") is None:
        return False, "docker CLI missing (make docker-engine)"
    proc = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return False, f"docker compose missing (make compose): {proc.stderr.strip()}"
    return True, ""


def compose(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``docker compose -f deploy/compose.yaml ARGS`` with the environment ``env`` on top of
    this process's, YADML_* variables of this process removed (the file's defaults apply)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("YADML_")}
    full.update(env or {})
    return subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=timeout,
        check=False,
    )
