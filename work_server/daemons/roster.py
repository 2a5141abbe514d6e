"""The daemons in one place: each one's name, how it is called, which interval of
``DaemonIntervals`` paces it and which daemons a run that handled something wakes. The app,
the scheduler, ``run_all_once`` and the status pages all go through ``ROSTER`` (or
``DAEMON_NAMES``); nothing else spells a daemon's name.

Order matters: it is the pipeline's order (``run_all_once`` runs the ``pipeline`` daemons in
it, and the scheduler staggers the first runs in it). The transitioner creates results, the
validator picks canonical ones, the round closer merges them, the work generator creates the
next round's work, the job finisher ends the job; the file deleter is housekeeping.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from pathlib import Path

from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.blobs import BlobStore
from work_server.config import DaemonIntervals, ServerConfig
from work_server.daemons import (
    file_deleter,
    job_finisher,
    round_closer,
    transitioner,
    validator,
    work_generator,
)

__all__ = ["DAEMON_NAMES", "ROSTER", "DaemonDeps", "DaemonSpec"]


@dataclass(frozen=True, kw_only=True)
class DaemonDeps:
    """Everything the daemons need besides a session and the time."""

    blobs: BlobStore
    runs_dir: Path
    data_dir: Path | None = None  # MNIST IDX files (``load_dataset``)
    fashion_dir: Path | None = None
    blob_grace_s: float = 3600.0  # the file deleter keeps unreferenced blobs this long

    @classmethod
    def from_config(cls, config: ServerConfig, *, blobs: BlobStore) -> DaemonDeps:
        return cls(
            blobs=blobs,
            runs_dir=config.runs_dir,
            data_dir=config.data_dir,
            fashion_dir=config.fashion_dir,
            blob_grace_s=config.blob_grace_s,
        )


#: ``run_once`` with its dependencies taken from ``DaemonDeps``: items handled
RunOnce = Callable[[AsyncSession, float, DaemonDeps], Awaitable[int]]


@dataclass(frozen=True, kw_only=True)
class DaemonSpec:
    name: str  # also its ``DaemonRun`` row
    run_once: RunOnce
    #: the ``DaemonIntervals`` field that paces it (several daemons may share one)
    interval_field: str
    #: daemons that may have work after a run of this one handled something
    wakes: tuple[str, ...] = ()
    #: part of the job pipeline: ``run_all_once`` runs it
    pipeline: bool = True

    def interval(self, intervals: DaemonIntervals) -> float:
        return float(getattr(intervals, self.interval_field))


ROSTER: tuple[DaemonSpec, ...] = (
    DaemonSpec(
        name=transitioner.NAME,
        run_once=lambda session, now, deps: transitioner.run_once(session, now),
        interval_field="transitioner",
        # flags work units for the validator; failed work units may end a round
        wakes=(validator.NAME, round_closer.NAME),
    ),
    DaemonSpec(
        name=validator.NAME,
        run_once=lambda session, now, deps: validator.run_once(session, now, blobs=deps.blobs),
        interval_field="validator",
        # canonical results may close a round; validated work units go back to the
        # transitioner (more replicas, or none needed any more)
        wakes=(transitioner.NAME, round_closer.NAME),
    ),
    DaemonSpec(
        name=round_closer.NAME,
        run_once=lambda session, now, deps: round_closer.run_once(
            session, now, blobs=deps.blobs, runs_dir=deps.runs_dir
        ),
        # the three federated-learning daemons share the period of the one they were split
        # from (``--interval-aggregator``)
        interval_field="aggregator",
        # cancelled work units' results to retire, the next round, or the job's end
        wakes=(transitioner.NAME, work_generator.NAME, job_finisher.NAME),
    ),
    DaemonSpec(
        name=work_generator.NAME,
        run_once=lambda session, now, deps: work_generator.run_once(
            session, now, blobs=deps.blobs, data_dir=deps.data_dir, fashion_dir=deps.fashion_dir
        ),
        interval_field="aggregator",
        wakes=(transitioner.NAME,),  # new work units want results
    ),
    DaemonSpec(
        name=job_finisher.NAME,
        run_once=lambda session, now, deps: job_finisher.run_once(
            session, now, runs_dir=deps.runs_dir
        ),
        interval_field="aggregator",
    ),
    DaemonSpec(
        name=file_deleter.NAME,
        run_once=lambda session, now, deps: file_deleter.run_once(
            session, now, blobs=deps.blobs, grace_s=deps.blob_grace_s
        ),
        interval_field="file_deleter",
        pipeline=False,
    ),
)

DAEMON_NAMES: tuple[str, ...] = tuple(spec.name for spec in ROSTER)


def _check(roster: tuple[DaemonSpec, ...]) -> None:
    """Catch a misspelt interval field or wake-up at import, not at the first busy run."""
    names = {spec.name for spec in roster}
    interval_fields = {f.name for f in fields(DaemonIntervals)}
    for spec in roster:
        if spec.interval_field not in interval_fields:
            raise ValueError(f"{spec.name}: no DaemonIntervals.{spec.interval_field}")
        if unknown := set(spec.wakes) - names:
            raise ValueError(f"{spec.name} wakes unknown daemons {sorted(unknown)}")


_check(ROSTER)
