"""The units this client holds, one asyncio task each: started from new assignments (once
their signature checks out) or from what a previous run left, aborted when the server no
longer wants them, cancelled when the daemon stops (they resume on the next start).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from yadml_common.signing import SignatureError, WorkVerifier
from yadml_common.wire import RunningUnit, WorkUnitAssignment

from ..state import PendingFailure, StateDir, UnitRecord
from .unit_lifecycle import Unit, UnitLifecycle

__all__ = ["UnitsInFlight"]

log = logging.getLogger(__name__)


class UnitsInFlight:
    """Spawns, tracks and stops the tasks that ``lifecycle`` drives the units in.

    With a ``verifier`` (the pinned project keys), a unit without a valid signature by a
    pinned key is never downloaded or run: it is reported as ``invalid_input``.
    ``handled`` counts the units that left the client (uploaded, reported or dropped).
    """

    def __init__(
        self,
        *,
        state: StateDir,
        lifecycle: UnitLifecycle,
        verifier: WorkVerifier | None = None,
    ) -> None:
        self._state = state
        self._lifecycle = lifecycle
        self._verifier = verifier
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._units: dict[int, Unit] = {}
        self.handled = 0

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The tasks still running, to wait on."""
        return list(self._tasks.values())

    def running(self) -> list[RunningUnit]:
        """Every unit in flight with its progress, for a heartbeat."""
        return [
            RunningUnit(result_id=rid, fraction_done=self._lifecycle.fraction_done(unit))
            for rid, unit in sorted(self._units.items())
        ]

    def resume_leftovers(self) -> None:
        """Spawn the units a previous run left in the state directory."""
        # The state lock is held and nothing downloads yet: partial files are leftovers.
        self._state.cache.remove_partials()
        for record in self._state.units.load_all():
            if record.result_id not in self._tasks:
                log.info("unit %d: found from a previous run (%s)", record.result_id, record.status)
                self._spawn(record, recovered=True)

    def start_all(self, assignments: Sequence[WorkUnitAssignment]) -> None:
        for assignment in assignments:
            self.start(assignment)

    def start(self, assignment: WorkUnitAssignment) -> None:
        """Persist a new assignment, then spawn its task (a refused one only reports)."""
        if assignment.result_id in self._tasks:
            log.warning("unit %d: assigned twice, ignoring", assignment.result_id)
            return
        if self._verifier is not None:
            try:
                self._verifier.verify(assignment)
            except SignatureError as exc:
                log.error("unit %d: refused, not run: %s", assignment.result_id, exc)
                failure = PendingFailure(reason="invalid_input", detail=f"refused: {exc}")
                record = UnitRecord(assignment=assignment, status="reporting", failure=failure)
                self._state.units.save(record)
                self._spawn(record, recovered=False)
                return
        log.info(
            "unit %d: received (job %d round %d wu %d, deadline %s)",
            assignment.result_id,
            assignment.job_id,
            assignment.round,
            assignment.workunit_id,
            assignment.deadline.isoformat(),
        )
        record = UnitRecord(assignment=assignment, status="downloading")
        self._state.units.save(record)  # persisted before any download
        self._spawn(record, recovered=False)

    def _spawn(self, record: UnitRecord, *, recovered: bool) -> None:
        rid = record.result_id
        unit = Unit(record)
        self._units[rid] = unit
        task = asyncio.create_task(
            self._lifecycle.drive(unit, recovered=recovered), name=f"unit-{rid}"
        )
        self._tasks[rid] = task

        def _forget(done: asyncio.Task[None]) -> None:
            if unit.left:
                self.handled += 1
            if self._tasks.get(rid) is done:
                del self._tasks[rid]
                self._units.pop(rid, None)

        task.add_done_callback(_forget)

    async def abort(self, result_id: int) -> None:
        """Stop a unit the server no longer wants: cancel it and drop its files, no upload."""
        log.info("unit %d: aborted by the server", result_id)
        task = self._tasks.get(result_id)
        if task is None:
            if self._state.units.unit_dir(result_id).exists():
                self._state.units.remove(result_id)
                self.handled += 1
            return
        # The unit's task drops its files itself (see UnitLifecycle.drive), so that whoever
        # waits for the task sees it gone even if this coroutine is cancelled meanwhile.
        self._units[result_id].aborted = True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def wait_all(self) -> None:
        """Wait until every unit (including ones spawned meanwhile) has ended."""
        while self._tasks:
            await asyncio.wait(list(self._tasks.values()))

    async def cancel_all(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
