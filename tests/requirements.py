"""Real components a test needs (Docker engine, Chromium, PostgreSQL, QEMU...).

``require(ok, reason)`` skips the test locally when the component is missing, but under
``CI=true`` it fails instead: CI must never pass by silently skipping a real-component test.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok: bool, reason: str) -> None:
    if ok:
        return
    if in_ci():
        pytest.fail(f"required component missing under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)
