"""Banning a host revokes its work at once (``services.hosts.set_banned``): its in-progress
results end, its unjudged successes become invalid, and the transitioner reissues the work
units in one pass; unbanning restores dispatch only."""

from __future__ import annotations

import pytest
from sqlmodel import col

from tests.work_server.daemons.conftest import T0, Sim, make_spec
from work_server.db.models import (
    Host,
    Outcome,
    Result,
    ServerState,
    ValidateState,
    WorkUnit,
    WorkUnitState,
)
from work_server.errors import NotFound
from work_server.services import credit, dispatch, hosts


async def _set_banned(sim: Sim, host_id: int, now: float, banned: bool = True) -> int:
    """Ban or unban as the API does; returns how often the transitioner was woken."""
    woken: list[None] = []
    async with sim.sm() as s:
        host = await hosts.set_banned(s, host_id, banned, now=now, wake=lambda: woken.append(None))
        assert host.banned is banned
    return len(woken)


async def _claim(sim: Sim, host_id: int, now: float) -> list[dispatch.Claimed]:
    """What ``POST /work`` hands the host."""
    async with sim.sm() as s:
        host = await s.get(Host, host_id)
        assert host is not None
        return await dispatch.claim_work(s, host, max_units=8, runtimes=None, now=now)


async def _unsent(sim: Sim, wu_id: int | None) -> list[Result]:
    return [r for r in await sim.results(wu_id) if r.server_state == ServerState.unsent]


async def test_ban_reissues_in_progress_work_within_one_transitioner_pass(sim: Sim) -> None:
    job_id = await sim.start(make_spec(shards=2, rounds=1))
    banned, other = await sim.add_host("banned"), await sim.add_host("other")
    await sim.transition(T0)
    wus = await sim.wus(job_id)
    revoked = [r for wu in wus for r in await sim.claim_all(wu.id, [banned], T0)]
    assert len(revoked) == 2

    assert await _set_banned(sim, banned, T0 + 1) == 1  # the transitioner is woken once
    for r in revoked:
        row: Result = await sim.get(Result, r.id)
        assert (row.server_state, row.outcome) == (ServerState.over, Outcome.client_error)
        assert row.error_reason == hosts.BANNED
        assert "banned" in (row.error_detail or "")
    for wu in wus:
        assert (await sim.get(WorkUnit, wu.id)).transition_time == T0 + 1
    host: Host = await sim.get(Host, banned)
    assert (host.results_error, host.results_invalid) == (0, 0)  # revoked, not failed

    await sim.transition(T0 + 1)  # one pass: replacements exist
    for wu in wus:
        assert len(await _unsent(sim, wu.id)) == 1
    claimed = await _claim(sim, other, T0 + 2)
    assert sorted(c.workunit.id or 0 for c in claimed) == sorted(wu.id or 0 for wu in wus)


async def test_ban_invalidates_unjudged_successes(sim: Sim) -> None:
    job_id = await sim.start(make_spec(shards=1, rounds=1))
    banned, other = await sim.add_host("banned"), await sim.add_host("other")
    await sim.transition(T0)
    (wu,) = await sim.wus(job_id)
    (r,) = await sim.claim_all(wu.id, [banned], T0)
    await sim.upload(r.id, T0 + 1)
    await sim.transition(T0 + 1)
    assert (await sim.get(WorkUnit, wu.id)).need_validate  # due for the validator

    assert await _set_banned(sim, banned, T0 + 2) == 1
    row: Result = await sim.get(Result, r.id)
    assert (row.outcome, row.validate_state) == (Outcome.validate_error, ValidateState.invalid)
    assert row.error_reason == hosts.BANNED
    host: Host = await sim.get(Host, banned)
    assert (host.results_invalid, host.results_valid, host.credit) == (1, 0, 0.0)

    await sim.validate(T0 + 2)  # nothing left to judge: no canonical from the banned host
    unit: WorkUnit = await sim.get(WorkUnit, wu.id)
    assert (unit.state, unit.canonical_result_id) == (WorkUnitState.active, None)
    await sim.transition(T0 + 2)
    (claimed,) = await _claim(sim, other, T0 + 3)
    await sim.upload(claimed.result_id, T0 + 4)
    await sim.cycle(T0 + 4)
    unit = await sim.get(WorkUnit, wu.id)
    assert (unit.state, unit.canonical_result_id) == (WorkUnitState.done, claimed.result_id)
    assert (await sim.get(Host, banned)).credit == 0.0
    assert (await sim.get(Host, other)).credit == pytest.approx(
        credit.result_credit(wu.num_samples, wu.task)
    )


async def test_ban_keeps_results_already_valid(sim: Sim) -> None:
    job_id = await sim.start(make_spec(shards=1, rounds=2))
    banned = await sim.add_host("banned")
    await sim.complete_round(job_id, 1, banned, T0)
    (wu,) = await sim.wus(job_id, 1)
    before: Host = await sim.get(Host, banned)
    assert before.results_valid == 1
    assert before.credit > 0

    assert await _set_banned(sim, banned, T0 + 1) == 0  # nothing to revoke, nobody woken
    after: Host = await sim.get(Host, banned)
    assert (after.results_valid, after.credit) == (1, before.credit)
    (r,) = await sim.results(wu.id)
    assert (r.outcome, r.validate_state) == (Outcome.success, ValidateState.valid)


async def test_unban_restores_dispatch_only(sim: Sim) -> None:
    job_id = await sim.start(make_spec(shards=1, rounds=1))
    banned = await sim.add_host("banned")
    await sim.transition(T0)
    (wu,) = await sim.wus(job_id)
    (r,) = await sim.claim_all(wu.id, [banned], T0)
    await _set_banned(sim, banned, T0 + 1)
    await sim.transition(T0 + 1)
    results = await sim.results(wu.id)

    assert await _set_banned(sim, banned, T0 + 2, banned=False) == 0
    await sim.transition(T0 + 2)
    assert await sim.results(wu.id) == results  # the revoked result stays revoked
    # dispatch is back, but never the work unit it was revoked from (it holds a result)
    assert await _claim(sim, banned, T0 + 3) == []
    second = await sim.start(make_spec(shards=1, rounds=1), T0 + 3)
    await sim.transition(T0 + 3)
    (claimed,) = await _claim(sim, banned, T0 + 4)
    assert claimed.workunit.job_id == second
    row: Result = await sim.get(Result, r.id)
    assert (row.outcome, row.error_reason) == (Outcome.client_error, hosts.BANNED)
    assert await sim.all(Result, col(Result.workunit_id) == wu.id) == results


async def test_ban_of_unknown_host_is_404(sim: Sim) -> None:
    async with sim.sm() as s:
        with pytest.raises(NotFound):
            await hosts.set_banned(s, 999, now=T0)


async def test_a_ban_never_fails_a_work_unit_at_its_limits(sim: Sim) -> None:
    rep = {"max_error_results": 1, "max_total_results": 2}
    job_id = await sim.start(make_spec(shards=1, rounds=1, replication=rep))
    crashing, banned, other = [await sim.add_host(n) for n in ("crashing", "banned", "other")]
    await sim.transition(T0)
    (wu,) = await sim.wus(job_id)
    (first,) = await sim.claim_all(wu.id, [crashing], T0)
    await sim.fail(first.id, T0 + 1)
    await sim.transition(T0 + 1)  # one error (the limit) and one result left (the limit)
    (second,) = await sim.claim_all(wu.id, [banned], T0 + 1)

    await _set_banned(sim, banned, T0 + 2)
    await sim.transition(T0 + 2)
    unit: WorkUnit = await sim.get(WorkUnit, wu.id)
    assert (unit.state, unit.error) == (WorkUnitState.active, None)
    assert len(await _unsent(sim, wu.id)) == 1  # a replacement, beyond max_total_results
    (claimed,) = await _claim(sim, other, T0 + 3)
    assert claimed.workunit.id == wu.id
    assert second.id != claimed.result_id
