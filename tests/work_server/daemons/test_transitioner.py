from __future__ import annotations

from tests.work_server.daemons.conftest import T0, Sim, make_spec
from work_server.db.models import (
    FAR_FUTURE,
    DaemonRun,
    Host,
    Outcome,
    ServerState,
    WorkUnit,
    WorkUnitState,
)


async def test_creates_target_nresults_unsent_results(sim: Sim) -> None:
    job_id = await sim.start(make_spec(replication={"min_quorum": 2, "target_nresults": 3}))
    assert await sim.transition(T0) == 2
    for wu in await sim.wus(job_id):
        results = await sim.results(wu.id)
        assert len(results) == 3
        assert all(r.server_state == ServerState.unsent and r.created_at == T0 for r in results)
        assert (await sim.get(WorkUnit, wu.id)).transition_time == FAR_FUTURE
    # idempotent: nothing due, nothing created
    assert await sim.transition(T0 + 1) == 0
    assert len(await sim.results((await sim.wus(job_id))[0].id)) == 3
    run = await sim.get(DaemonRun, "transitioner")
    assert run.last_run == T0 + 1
    assert run.last_error is None


async def test_deadline_passes_no_reply_and_replacement(sim: Sim) -> None:
    job_id = await sim.start(make_spec(shards=1))
    host = await sim.add_host()
    await sim.transition(T0)
    (wu,) = await sim.wus(job_id)
    (r,) = await sim.claim_all(wu.id, [host], T0 + 1)
    assert (await sim.get(WorkUnit, wu.id)).transition_time == r.deadline == T0 + 101

    assert await sim.transition(T0 + 50) == 0  # not due yet
    assert await sim.transition(T0 + 101) == 1
    first, second = await sim.results(wu.id)
    assert (first.server_state, first.outcome) == (ServerState.over, Outcome.no_reply)
    assert first.validate_state == "init"
    assert second.server_state == ServerState.unsent
    assert second.created_at == T0 + 101
    assert (await sim.get(Host, host)).results_error == 1
    assert (await sim.get(WorkUnit, wu.id)).transition_time == FAR_FUTURE

    # looking again (e.g. a late upload bumps transition_time) never counts it twice
    await sim.set_wu(wu.id, transition_time=T0 + 102)
    await sim.transition(T0 + 102)
    assert (await sim.get(Host, host)).results_error == 1
    assert len(await sim.results(wu.id)) == 2


async def test_too_many_errors_fails_the_work_unit(sim: Sim) -> None:
    spec = make_spec(shards=1, replication={"max_error_results": 1, "target_nresults": 2})
    job_id = await sim.start(spec)
    h1, h2 = await sim.add_host("a"), await sim.add_host("b")
    await sim.transition(T0)
    (wu,) = await sim.wus(job_id)
    claimed = await sim.claim_all(wu.id, [h1, h2], T0)
    await sim.fail(claimed[0].id, T0 + 1)
    await sim.transition(T0 + 1)  # 1 error: not more than 1, one replacement
    assert (await sim.get(WorkUnit, wu.id)).state == WorkUnitState.active
    results = await sim.results(wu.id)
    assert len(results) == 3
    assert results[2].server_state == ServerState.unsent

    await sim.fail(claimed[1].id, T0 + 2)
    await sim.transition(T0 + 2)
    wu_after = await sim.get(WorkUnit, wu.id)
    assert wu_after.state == WorkUnitState.failed
    assert "too many errors" in wu_after.error
    # the unsent replacement is no longer needed
    assert [(r.server_state, r.outcome) for r in await sim.results(wu.id)][2] == (
        ServerState.over,
        Outcome.didnt_need,
    )


async def test_max_total_results_fails_the_work_unit(sim: Sim) -> None:
    spec = make_spec(shards=1, replication={"max_error_results": 10, "max_total_results": 2})
    job_id = await sim.start(spec)
    host = await sim.add_host()
    (wu,) = await sim.wus(job_id)
    for i in range(2):
        await sim.transition(T0 + i)
        (r,) = await sim.claim_all(wu.id, [host], T0 + i)
        await sim.fail(r.id, T0 + i)
    await sim.transition(T0 + 5)
    after = await sim.get(WorkUnit, wu.id)
    assert after.state == WorkUnitState.failed
    assert "too many results" in after.error
    assert len(await sim.results(wu.id)) == 2


async def test_late_upload_after_no_reply_still_counts(sim: Sim) -> None:
    job_id = await sim.start(make_spec(shards=1))
    host, other = await sim.add_host("a"), await sim.add_host("b")
    await sim.transition(T0)
    (wu,) = await sim.wus(job_id)
    (r,) = await sim.claim_all(wu.id, [host], T0)
    await sim.transition(T0 + 100)  # no reply: a replacement is created and sent
    (replacement,) = await sim.claim_all(wu.id, [other], T0 + 101)

    await sim.upload(r.id, T0 + 102, noise=0.01)  # the API accepts it late
    assert (await sim.get(type(r), r.id)).late
    await sim.cycle(T0 + 102)
    after = await sim.get(WorkUnit, wu.id)
    assert after.state == WorkUnitState.done
    assert after.canonical_result_id == r.id
    assert (await sim.get(Host, host)).results_error == 1  # counted once (the API undoes it)
    # the replacement may still finish (for credit) and times out like any other
    assert (await sim.get(type(r), replacement.id)).server_state == ServerState.in_progress
    assert after.transition_time == replacement.deadline
    await sim.transition(T0 + 201)
    assert (await sim.get(type(r), replacement.id)).outcome == Outcome.no_reply
    assert (await sim.get(Host, other)).results_error == 1
