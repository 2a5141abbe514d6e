from __future__ import annotations

import stat
from pathlib import Path

import pytest

from yadml_common.fsutil import atomic_output, atomic_write


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.json"
    atomic_write(path, '{"a": 1}', mode=0o644)
    assert _mode(path) == 0o644
    atomic_write(path, b'{"a": 2}', mode=0o600, fsync=False)
    assert path.read_text() == '{"a": 2}'
    assert _mode(path) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_default_mode_is_private(tmp_path: Path) -> None:
    atomic_write(tmp_path / "secret", "s")
    assert _mode(tmp_path / "secret") == 0o600


def test_exclusive_keeps_the_first_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    atomic_write(path, "first", exclusive=True)
    with pytest.raises(FileExistsError):
        atomic_write(path, "second", exclusive=True)
    assert path.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["token"]


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "weights"
    path.write_bytes(b"old")

    def write_half_then_fail() -> None:
        with atomic_output(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        write_half_then_fail()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights"]


def test_atomic_output_hands_a_file_name_to_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    with atomic_output(path, mode=0o640) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".out.bin.")
        tmp.write_bytes(b"whole")
    assert path.read_bytes() == b"whole"
    assert _mode(path) == 0o640
