"""What every benchmark shares: the results folder, the common command-line options, the
results JSON, rich tables and the console, and running a benchmark module's own helper
process (a load generator, a measurement cell) with this interpreter."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yadml_common.fsutil import atomic_write

if TYPE_CHECKING:  # rich is imported when used: helper processes (cells, load generators)
    # import this module too, and stay as small as they were
    from rich.console import Console
    from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"


def results_path(name: str) -> Path:
    """``bench/results/<name>.json``."""
    return RESULTS_DIR / f"{name}.json"


def bench_parser(doc: str | None, *, results: str | None) -> argparse.ArgumentParser:
    """An argument parser described by ``doc``'s first paragraph, with ``--output``: the
    results JSON, ``bench/results/<results>.json`` by default (``results=None``: no default,
    the benchmark names the file after its options)."""
    description = " ".join(doc.split("\n\n")[0].split()) if doc else None
    script = Path(sys.argv[0]).resolve()
    # the usage line shows how to run it: as a module (the file alone cannot import bench)
    prog = f"python -m bench.{script.stem}" if script.parent == ROOT / "bench" else None
    parser = argparse.ArgumentParser(prog=prog, description=description)
    default = None if results is None else results_path(results)
    parser.add_argument(
        "--output",
        type=Path,
        default=default,
        help=f"results JSON (default: {default.relative_to(ROOT) if default else 'by options'})",
    )
    return parser


def add_seed(parser: argparse.ArgumentParser, *, default: int = 0) -> None:
    parser.add_argument("--seed", type=int, default=default, help="seed of data and training")


def add_threads(parser: argparse.ArgumentParser, *, default: int, help: str) -> None:
    parser.add_argument("--threads", type=int, default=default, help=help)


def module_command(module: str, *args: str) -> list[str]:
    """``python -m <module> args...`` with this interpreter; run it with ``cwd=ROOT`` so that
    ``bench`` is importable."""
    return [sys.executable, "-m", module, *args]


def console(*, min_width: int = 0) -> Console:
    """A console at least ``min_width`` columns wide, so wide tables stay readable when the
    output goes to a log rather than a terminal."""
    from rich.console import Console

    return Console(width=max(Console().width, min_width)) if min_width else Console()


def table(title: str, columns: Sequence[str], *, left: Collection[str] = ()) -> Table:
    """A rich table with ``columns``, right-justified (numbers) except those in ``left``."""
    from rich.table import Table

    out = Table(title=title)
    for column in columns:
        out.add_column(column, justify="left" if column in left else "right")
    return out


def write_results(path: Path, data: Mapping[str, Any], *, out: Console | None = None) -> Path:
    """Write ``data`` as indented JSON to ``path`` (atomically: a benchmark rewriting its
    results after every step never leaves half a file); say so on ``out``."""
    atomic_write(path, json.dumps(data, indent=2) + "\n", mode=0o644)
    if out is not None:
        out.print(f"wrote {path}")
    return path
