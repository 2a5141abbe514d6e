"""The files around a trainer run: arguments, tails, and files a worker may have planted."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from volunteer_client.executors.trainer_files import (
    copy_progress,
    read_small,
    read_tail,
    relay_progress,
    tail_text,
    take_regular_file,
    trainer_args,
)


def test_trainer_args() -> None:
    assert trainer_args(shard="s", weights="w", task="t", output="o") == [
        "--shard", "s", "--weights", "w", "--task", "t", "--output", "o",
    ]  # fmt: skip
    args = trainer_args(shard="s", weights="w", task="t", output="o", threads=2, progress="p")
    assert args[-4:] == ["--threads", "2", "--progress", "p"]


def test_tails_keep_the_last_bytes(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("".join(f"line {i:05d}\n" for i in range(2000)))
    tail = read_tail(log, 100)
    assert len(tail.encode()) == 100
    assert tail.endswith("line 01999\n")
    assert read_tail(tmp_path / "missing") == ""
    assert tail_text(b"abcdef", 3) == "def"
    assert tail_text("abc", 10) == "abc"


def test_files_a_worker_wrote_are_never_followed_through_a_link(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("the client's secret\n")
    planted = tmp_path / "spool"
    planted.mkdir()
    for name in ("log", "exit", "output"):
        os.symlink(secret, planted / name)
    assert read_tail(planted / "log") == ""
    assert read_small(planted / "exit") is None
    assert not take_regular_file(planted / "output", tmp_path / "taken")
    assert not (tmp_path / "taken").exists()
    (planted / "real").write_bytes(b"weights")
    assert take_regular_file(planted / "real", tmp_path / "taken")
    assert (tmp_path / "taken").read_bytes() == b"weights"


async def test_progress_is_copied_when_it_changes(tmp_path: Path) -> None:
    src, dest = tmp_path / "inside", tmp_path / "progress"
    assert copy_progress(src, dest) is None
    assert not dest.exists()
    src.write_text("0.5")
    assert copy_progress(src, dest) == "0.5"
    assert dest.read_text() == "0.5"
    src.write_text("0.75")
    relay = asyncio.create_task(relay_progress(src, dest))
    for _ in range(100):
        if dest.read_text() == "0.75":
            break
        await asyncio.sleep(0.01)
    relay.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await relay
    assert dest.read_text() == "0.75"
