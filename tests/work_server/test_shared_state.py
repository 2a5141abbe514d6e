"""Server processes sharing one state directory (several ``serve`` on one PostgreSQL
database) that start at once all end up with the same secrets: the first one written."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest

from work_server.cli import _operator_token
from work_server.signing import ProjectSigner, UploadGrant, UploadGrants

T = TypeVar("T")


def _at_once(n: int, fn: Callable[[], T]) -> list[T]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: fn(), range(n)))


def test_concurrent_starts_share_the_signing_key(tmp_path: Path) -> None:
    signers = _at_once(8, lambda: ProjectSigner.load_or_create(tmp_path))
    assert len({s.fingerprint for s in signers}) == 1
    assert ProjectSigner.load_or_create(tmp_path).fingerprint == signers[0].fingerprint


def test_concurrent_starts_share_the_upload_grant_secret(tmp_path: Path) -> None:
    grants = _at_once(8, lambda: UploadGrants.load_or_create(tmp_path))
    token = grants[0].issue(UploadGrant(result_id=1, host_id=2, max_bytes=10, expires=2e9))
    assert all(g.parse(token).result_id == 1 for g in grants)


def test_concurrent_starts_share_the_operator_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("YADML_OPERATOR_TOKEN", raising=False)
    tokens = _at_once(8, lambda: _operator_token(tmp_path))
    assert len({t for t, _ in tokens}) == 1
    assert sum(1 for _, generated in tokens if generated) == 1
    assert _operator_token(tmp_path) == (tokens[0][0], False)
    assert list(tmp_path.iterdir()) == [tmp_path / "operator_token"]
