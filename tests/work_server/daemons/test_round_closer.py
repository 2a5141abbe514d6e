from __future__ import annotations

from sqlmodel import col

from tests.work_server.daemons.conftest import T0, Sim, make_spec
from work_server.db.models import (
    DaemonRun,
    Host,
    Job,
    JobState,
    Outcome,
    Result,
    Round,
    RoundState,
    ServerState,
    WorkUnitState,
)


async def test_round_deadline_closes_at_min_fraction(sim: Sim) -> None:
    spec = make_spec(rounds=2, round_min_fraction=0.5, round_timeout_s=50.0)
    job_id = await sim.start(spec)
    h1, h2 = await sim.add_host("a"), await sim.add_host("b")
    await sim.transition(T0)
    wu0, wu1 = await sim.wus(job_id, 1)
    (done,) = await sim.claim_all(wu0.id, [h1], T0)
    await sim.claim_all(wu1.id, [h2], T0)
    await sim.upload(done.id, T0 + 5, noise=0.01)
    await sim.cycle(T0 + 5)

    assert await sim.close_rounds(T0 + 10) == 0  # before the deadline: wait for everybody
    assert await sim.close_rounds(T0 + 50) == 1
    r1 = (await sim.all(Round, col(Round.job_id) == job_id))[0]
    assert r1.state == RoundState.done
    assert r1.results_success == 1
    wus = await sim.wus(job_id, 1)
    assert [wu.state for wu in wus] == [WorkUnitState.done, WorkUnitState.cancelled]
    # the round closer only cancels; the transitioner retires the results, at once
    assert wus[1].transition_time == T0 + 50
    assert not wus[1].need_validate
    (slow,) = await sim.results(wu1.id)
    assert slow.server_state == ServerState.in_progress
    await sim.transition(T0 + 50)
    (slow_after,) = await sim.results(wu1.id)
    assert (slow_after.server_state, slow_after.outcome) == (ServerState.over, Outcome.didnt_need)
    assert (await sim.get(Host, h2)).results_error == 0  # retired, not timed out
    await sim.generate_work(T0 + 50)
    assert (await sim.get(Job, job_id)).current_round == 2


async def test_round_with_no_done_work_unit_fails_the_job(sim: Sim) -> None:
    spec = make_spec(rounds=2, shards=2, replication={"max_error_results": 0})
    job_id = await sim.start(spec)
    host = await sim.add_host()
    await sim.transition(T0)
    for wu in await sim.wus(job_id, 1):
        (r,) = await sim.claim_all(wu.id, [host], T0)
        await sim.fail(r.id, T0 + 1)
    await sim.transition(T0 + 1)
    assert await sim.advance(T0 + 2) == {"round_closer": 1, "work_generator": 0, "job_finisher": 1}
    job = await sim.get(Job, job_id)
    assert job.state == JobState.failed
    assert "no work unit completed" in job.error
    assert job.finished_at == T0 + 2
    (r1,) = await sim.all(Round, col(Round.job_id) == job_id)
    assert r1.state == RoundState.failed
    assert not (sim.runs_dir / str(job_id)).exists()  # no round to report
    assert (await sim.get(DaemonRun, "job_finisher")).last_error is None


async def test_cancelled_job_retires_its_work(sim: Sim) -> None:
    job_id = await sim.start(make_spec(replication={"target_nresults": 2}))
    host = await sim.add_host()
    await sim.transition(T0)
    wu0, _ = await sim.wus(job_id, 1)
    await sim.claim_all(wu0.id, [host], T0)
    async with sim.sm() as s:  # what the API's cancel does
        job = await s.get(Job, job_id)
        assert job is not None
        job.state = JobState.cancelled
        s.add(job)
        await s.commit()

    assert await sim.advance(T0 + 1) == {"round_closer": 1, "work_generator": 0, "job_finisher": 1}
    await sim.transition(T0 + 1)  # retires the cancelled work's results
    (rnd,) = await sim.all(Round, col(Round.job_id) == job_id)
    assert rnd.state == RoundState.cancelled
    assert rnd.closed_at == T0 + 1
    for wu in await sim.wus(job_id):
        assert wu.state == WorkUnitState.cancelled
        for r in await sim.results(wu.id):
            assert (r.server_state, r.outcome) == (ServerState.over, Outcome.didnt_need)
    assert (await sim.get(Job, job_id)).finished_at == T0 + 1
    assert sum((await sim.advance(T0 + 2)).values()) == 0


async def test_a_failed_job_retires_every_result_still_out(sim: Sim) -> None:
    """A done work unit's replica of an earlier round trains on for credit while the job
    runs; once the job's work is over (a round failed) the transitioner retires it too."""
    spec = make_spec(shards=1, rounds=3, replication={"target_nresults": 2, "max_error_results": 0})
    job_id = await sim.start(spec)
    fast, slow = await sim.add_host("fast"), await sim.add_host("slow")
    await sim.transition(T0)
    (wu,) = await sim.wus(job_id, 1)
    first, replica = await sim.claim_all(wu.id, [fast, slow], T0)
    await sim.upload(first.id, T0 + 1, noise=0.01)
    await sim.cycle(T0 + 1)
    await sim.advance(T0 + 2)  # round 1 done, round 2 made
    await sim.transition(T0 + 2)
    assert (await sim.get(Result, replica.id)).server_state == ServerState.in_progress

    (wu2,) = await sim.wus(job_id, 2)
    for r in await sim.claim_all(wu2.id, [fast], T0 + 3):
        await sim.fail(r.id, T0 + 3)
    await sim.transition(T0 + 3)  # too many errors: the work unit fails
    await sim.advance(T0 + 4)  # so does the round, then the job
    assert (await sim.get(Job, job_id)).state == JobState.failed
    await sim.transition(T0 + 4)
    late = await sim.get(Result, replica.id)
    assert (late.server_state, late.outcome) == (ServerState.over, Outcome.didnt_need)
    assert (await sim.get(Host, slow)).results_error == 0
