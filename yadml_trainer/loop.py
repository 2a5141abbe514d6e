"""A long-lived trainer: ``python -m yadml_trainer.loop SPOOL`` takes unit after unit.

The Docker executor's warm mode keeps one container running this loop, so the
interpreter start and ``import torch`` are paid once rather than per unit. The loop:

1. imports the trainer, then writes ``SPOOL/ready``;
2. waits for a directory ``SPOOL/<name>/`` holding ``request.json``, a JSON list of
   trainer arguments (``--shard S --weights W ...``, exactly as
   ``python -m yadml_trainer.trainer`` takes them; the host writes it last, atomically);
3. runs :func:`yadml_trainer.trainer.main` on it in this process, with stdout and stderr
   going to ``SPOOL/<name>/log``, then writes the exit status to ``SPOOL/<name>/exit``;
4. goes back to 2. It ends when ``SPOOL/stop`` exists (or the container is killed).

The trainer restores the global RNG state, the deterministic flag and the thread count after
each unit, so a unit gives the same weights here as in a fresh process. Like the trainer,
this module imports only the standard library and what the trainer imports.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from yadml_common.fsutil import atomic_write
from yadml_trainer import trainer
from yadml_trainer.exit_status import EXIT_ERROR, EXIT_INVALID_INPUT
from yadml_trainer.spool import EXIT, LOG, READY, REQUEST, STOP

__all__ = ["POLL_INTERVAL_S", "main", "run_request", "serve"]

POLL_INTERVAL_S = 0.02


def run_request(unit_dir: Path) -> int:
    """Run one request directory; returns (and records in ``exit``) the trainer's status."""
    try:
        args = json.loads((unit_dir / REQUEST).read_text(encoding="utf-8"))
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ValueError("request.json must be a JSON list of strings")
    except (OSError, ValueError) as exc:
        (unit_dir / LOG).write_text(f"trainer loop: invalid request: {exc}\n")
        code = EXIT_INVALID_INPUT
    else:
        with (
            (unit_dir / LOG).open("w", encoding="utf-8") as log,
            contextlib.redirect_stdout(log),
            contextlib.redirect_stderr(log),
        ):
            try:
                code = trainer.main(args)
            except SystemExit as exc:  # argparse errors exit
                code = exc.code if isinstance(exc.code, int) else EXIT_ERROR
            except Exception as exc:  # the loop must survive a unit
                print(f"trainer loop: {type(exc).__name__}: {exc}", file=sys.stderr)
                code = EXIT_ERROR
    atomic_write(unit_dir / EXIT, f"{code}\n", mode=0o644, fsync=False)
    gc.collect()  # after the host was told: it is not part of the unit's time
    return code


def serve(spool: Path, *, poll_interval_s: float = POLL_INTERVAL_S) -> None:
    """Take requests from ``spool`` until ``spool/stop`` appears."""
    done: set[str] = set()
    atomic_write(spool / READY, f"{os.getpid()}\n", mode=0o644, fsync=False)
    while not (spool / STOP).exists():
        pending = sorted(
            entry.name
            for entry in os.scandir(spool)
            if entry.name not in done
            and entry.is_dir(follow_symlinks=False)
            and (Path(entry.path) / REQUEST).is_file()
            and not (Path(entry.path) / EXIT).exists()
        )
        if not pending:
            time.sleep(poll_interval_s)
            continue
        for name in pending:
            run_request(spool / name)
            done.add(name)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m yadml_trainer.loop SPOOL_DIR", file=sys.stderr)
        return EXIT_INVALID_INPUT
    serve(Path(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
