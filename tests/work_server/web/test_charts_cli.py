"""The SVG charts (well-formed, accessible, escaped) and ``yadml-server operator create``."""

from __future__ import annotations

import asyncio
import io
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from sqlmodel import select

from work_server.cli import main
from work_server.db.engine import make_engine, make_sessionmaker, sqlite_url
from work_server.db.models import Operator
from work_server.web.auth import Passwords
from work_server.web.charts import accuracy_loss_chart, confusion_heatmap

SVG = "{http://www.w3.org/2000/svg}"


def test_accuracy_chart_is_valid_accessible_svg() -> None:
    svg = accuracy_loss_chart([1, 2, 3], [0.5, 0.8, 0.9], [1.2, 0.6, 0.3], total_rounds=5)
    root = ET.fromstring(str(svg))
    assert root.get("role") == "img"
    assert root.find(f"{SVG}title") is not None
    desc = root.find(f"{SVG}desc")
    assert desc is not None
    assert "round 3: accuracy 0.9000" in (desc.text or "")
    assert len(root.findall(f".//{SVG}circle[@class='point-accuracy']")) == 3
    assert len(root.findall(f".//{SVG}polyline")) == 2
    assert root.get("data-points") == "3"
    assert "style=" not in str(svg)  # the pages' CSP forbids inline styles


def test_empty_and_single_round_charts() -> None:
    ET.fromstring(str(accuracy_loss_chart([], [], [], total_rounds=3)))
    root = ET.fromstring(str(accuracy_loss_chart([1], [0.7], [0.4], total_rounds=1)))
    assert len(root.findall(f".//{SVG}circle")) == 2


def test_heatmap_is_valid_and_escapes_labels() -> None:
    matrix = [[8, 2], [1, 9]]
    svg = confusion_heatmap(matrix, labels=["<cat>", "dog & co"])
    root = ET.fromstring(str(svg))
    assert len(root.findall(f".//{SVG}rect[@class='cell']")) == 4
    assert "<cat>" not in str(svg)
    assert "&lt;cat&gt;" in str(svg)
    desc = root.find(f"{SVG}desc")
    assert desc is not None
    assert "17 on the diagonal" in (desc.text or "")


def _run_cli(monkeypatch: pytest.MonkeyPatch, argv: list[str], stdin: str) -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(argv)


def _operators(state_dir: Path) -> list[Operator]:
    async def go() -> list[Operator]:
        engine = make_engine(sqlite_url(state_dir))
        try:
            async with make_sessionmaker(engine)() as session:
                return list((await session.exec(select(Operator))).all())
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_operator_create_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "var"
    args = ["operator", "create", "--state-dir", str(state), "--username", "bob"]
    assert _run_cli(monkeypatch, [*args, "--password-stdin"], "a long password\n") == 0
    [op] = _operators(state)
    assert op.username == "bob"
    assert op.password_hash.startswith("$argon2id$")
    assert Passwords().verify_sync(op.password_hash, "a long password")
    # no second operator of the same name; short passwords refused
    assert _run_cli(monkeypatch, [*args, "--password-stdin"], "another password\n") == 1
    assert _run_cli(monkeypatch, [*args, "--password-stdin", "--reset"], "short\n") == 1
    assert _run_cli(monkeypatch, [*args, "--password-stdin", "--reset"], "a new password\n") == 0
    [op] = _operators(state)
    assert Passwords().verify_sync(op.password_hash, "a new password")
    assert not Passwords().verify_sync(op.password_hash, "a long password")
