from __future__ import annotations

import os
from pathlib import Path

import pytest

from volunteer_client.daemon.unit_files import link_or_copy, read_progress


def test_read_progress(tmp_path: Path) -> None:
    path = tmp_path / "progress"
    assert read_progress(path) == 0.0
    for text, value in [("0.5", 0.5), ('{"fraction_done": 0.75}', 0.75), ("7", 1.0), ("x", 0.0)]:
        path.write_text(text)
        assert read_progress(path) == value


def test_link_or_copy_links_and_falls_back_to_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "blob"
    src.write_bytes(b"bytes")
    link_or_copy(src, tmp_path / "linked")
    assert os.path.samefile(src, tmp_path / "linked")

    def no_links(src: object, dest: object) -> None:
        raise OSError("cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "copied").write_bytes(b"stale")
    link_or_copy(src, tmp_path / "copied")
    assert (tmp_path / "copied").read_bytes() == b"bytes"
    assert not os.path.samefile(src, tmp_path / "copied")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob", "copied", "linked"]
