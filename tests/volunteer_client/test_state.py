from __future__ import annotations

import hashlib
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from volunteer_client.errors import NotAttached, StateLocked
from volunteer_client.state import (
    Attachment,
    InputCache,
    StateDir,
    UnitRecord,
    default_state_dir,
)
from yadml_common.wire import TaskConfig, UploadSpec, WorkUnitAssignment


def _assignment(result_id: int) -> WorkUnitAssignment:
    return WorkUnitAssignment(
        result_id=result_id,
        workunit_id=1,
        job_id=1,
        round=1,
        deadline=datetime(2030, 1, 1, tzinfo=UTC),
        runtime="process",
        inputs=[],
        task=TaskConfig(),
        upload=UploadSpec(url=f"/api/v1/results/{result_id}", grant="g.mac", max_bytes=100),
    )


def test_default_state_dir_from_env(tmp_path: Path) -> None:
    assert default_state_dir({"YADML_CLIENT_STATE_DIR": str(tmp_path)}) == tmp_path
    assert default_state_dir({}) == Path.home() / ".local" / "state" / "yadml-client"


def test_attachment_roundtrip_is_private(state: StateDir) -> None:
    assert state.load_attachment() is None
    with pytest.raises(NotAttached):
        state.require_attachment()
    att = Attachment(server_url="http://s", host_id=3, host_token="t", name="pc")
    state.save_attachment(att)
    assert stat.S_IMODE(state.attachment_path.stat().st_mode) == 0o600
    assert state.require_attachment() == att
    assert att.runtimes == ["process"]
    assert state.remove_attachment() is True
    assert state.remove_attachment() is False


def test_cache_verifies_and_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = InputCache(tmp_path / "cache", max_bytes=25)
    cache.root.mkdir()
    shas = []
    for i, data in enumerate([b"a" * 10, b"b" * 10, b"c" * 10]):
        sha = hashlib.sha256(data).hexdigest()
        cache.path_for(sha).write_bytes(data)
        os.utime(cache.path_for(sha), (1000 + i, 1000 + i))
        shas.append(sha)
    assert cache.total_bytes() == 30
    # the oldest (a) would go, but it is kept; the next oldest (b) goes instead
    assert cache.evict(keep=frozenset({shas[0]})) == [shas[1]]
    assert cache.get(shas[1]) is None
    # using 'a' refreshes it, so 'c' is now the least recently used
    assert cache.get(shas[0]) is not None
    cache.max_bytes = 10
    assert cache.evict() == [shas[2]]
    # a corrupt entry is dropped on read
    cache.path_for(shas[0]).write_bytes(b"tampered")
    assert cache.get(shas[0]) is None
    assert not cache.path_for(shas[0]).exists()
    with pytest.raises(ValueError, match=r"not a sha256: '\.\./etc/passwd'"):
        cache.path_for("../etc/passwd")
    (cache.root / f".{shas[2]}.abc.part").write_bytes(b"partial")
    assert cache.remove_partials() == 1
    assert list(cache.root.iterdir()) == []


def test_units_save_load_remove(state: StateDir) -> None:
    state.units.save(UnitRecord(assignment=_assignment(7), status="running"))
    state.units.save(UnitRecord(assignment=_assignment(3)))
    broken = state.units.unit_dir(9)
    broken.mkdir()
    (broken / "unit.json").write_text("{not json")
    records = state.units.load_all()
    assert [(r.result_id, r.status) for r in records] == [(3, "downloading"), (7, "running")]
    assert not broken.exists()
    state.units.remove(7)
    assert state.units.load(7) is None
    assert state.units.load(3) is not None


def test_lock_excludes_a_second_holder(state: StateDir) -> None:
    other = StateDir(state.root)
    with state.lock(), pytest.raises(StateLocked), other.lock():
        pass
    with other.lock():
        pass
