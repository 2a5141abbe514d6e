"""Adaptive replication, quotas and trust through the real dispatch, validator and uploads
services (the database and the daemons as in production, volunteers simulated)."""

from __future__ import annotations

import pytest
from sqlmodel import col, select

from tests.work_server.daemons.conftest import T0, Sim, make_spec
from work_server.db.models import (
    Host,
    HostRuntimeTrust,
    Outcome,
    Result,
    ServerState,
    ValidateState,
    WorkUnit,
    WorkUnitState,
)
from work_server.errors import Gone
from work_server.services import dispatch, host_records, trust, uploads
from work_server.services.status import server_status

ADAPTIVE = {"adaptive": True, "trust_threshold": 2, "spot_check_rate": 0.0}


async def _claim(sim: Sim, host_id: int, now: float, draw: float = 0.99) -> list[int]:
    async with sim.sm() as s:
        host = await s.get(Host, host_id)
        assert host is not None
        claimed = await dispatch.claim_work(
            s, host, max_units=1, runtimes=None, now=now, draw=lambda: draw
        )
    return [c.result_id for c in claimed]


async def _trust(sim: Sim, host_id: int) -> HostRuntimeTrust:
    row = await sim.get(HostRuntimeTrust, (host_id, "process"))
    assert isinstance(row, HostRuntimeTrust)
    return row


async def test_untrusted_claim_replicates_to_a_distinct_host(sim: Sim) -> None:
    job_id = await sim.start(make_spec(shards=1, replication=ADAPTIVE))
    a, b = await sim.add_host("a"), await sim.add_host("b")
    await sim.transition(T0)
    (wu,) = await sim.wus(job_id)
    assert (wu.min_quorum, wu.target_nresults, wu.adaptive) == (1, 1, True)

    # a new host: its unit is raised to a quorum of 2 and a replica appears for another host
    (r_a,) = await _claim(sim, a, T0)
    wu = await sim.get(WorkUnit, wu.id)
    assert (wu.min_quorum, wu.target_nresults) == (2, 2)
    await sim.transition(T0)
    assert len(await sim.results(wu.id)) == 2
    assert await _claim(sim, a, T0) == []  # never two replicas to one host
    (r_b,) = await _claim(sim, b, T0)

    # one result alone is not enough; agreeing replicas -> both valid, trust grows
    await sim.upload(r_a, T0 + 1, noise=0.0)
    await sim.cycle(T0 + 1)
    assert (await sim.get(WorkUnit, wu.id)).state == WorkUnitState.active
    await sim.upload(r_b, T0 + 2, noise=0.0)
    await sim.cycle(T0 + 2)
    assert (await sim.get(WorkUnit, wu.id)).state == WorkUnitState.done
    for host in (a, b):
        t = await _trust(sim, host)
        assert (t.valid, t.consecutive_valid, t.quota_used_today) == (1, 1, 1)


async def test_trusted_host_gets_unreplicated_units_except_spot_checks(sim: Sim) -> None:
    job_id = await sim.start(make_spec(shards=2, replication={**ADAPTIVE, "spot_check_rate": 0.5}))
    a = await sim.add_host("a")
    async with sim.sm() as s:  # a is trusted: 2 consecutive valid results
        await trust.record_valid(s, a, "process")
        await trust.record_valid(s, a, "process")
        await s.commit()
    await sim.transition(T0)
    wu0, wu1 = await sim.wus(job_id)

    await _claim(sim, a, T0, draw=0.7)  # no spot check
    assert (await sim.get(WorkUnit, wu0.id)).min_quorum == 1
    await _claim(sim, a, T0, draw=0.2)  # spot check: replicated
    assert (await sim.get(WorkUnit, wu1.id)).min_quorum == 2

    # the unreplicated unit's single result is canonical at once
    (r0,) = [r for r in await sim.results(wu0.id)]
    await sim.upload(r0.id, T0 + 1)
    await sim.cycle(T0 + 1)
    assert (await sim.get(WorkUnit, wu0.id)).state == WorkUnitState.done


async def test_disagreeing_host_loses_trust_and_quota(sim: Sim) -> None:
    job_id = await sim.start(make_spec(shards=1, replication=ADAPTIVE))
    honest1, honest2, cheat = [await sim.add_host(n) for n in ("h1", "h2", "c")]
    await sim.transition(T0)
    (wu,) = await sim.wus(job_id)
    (rc,) = await _claim(sim, cheat, T0)
    await sim.transition(T0)
    (r1,) = await _claim(sim, honest1, T0)
    await sim.upload(rc, T0 + 1, noise=0.5, seed=9)  # a different answer
    await sim.upload(r1, T0 + 1, noise=0.0)
    await sim.cycle(T0 + 1)
    # disagreement: a third replica for a third host
    assert (await sim.get(WorkUnit, wu.id)).target_nresults == 3
    (r2,) = await _claim(sim, honest2, T0 + 2)
    await sim.upload(r2, T0 + 3, noise=0.0)
    await sim.cycle(T0 + 3)
    wu = await sim.get(WorkUnit, wu.id)
    assert wu.state == WorkUnitState.done
    assert wu.canonical_result_id == r1
    assert (await sim.get(Result, rc)).validate_state == ValidateState.invalid
    t = await _trust(sim, cheat)
    assert (t.invalid, t.consecutive_valid) == (1, 0)
    assert t.daily_quota == t.max_daily_quota // 2
    async with sim.sm() as s:  # halving stays an integer: 50 -> 25 -> 12 -> 6
        for _ in range(3):
            await trust.record_invalid(s, cheat, "process")
        await s.commit()
    t = await _trust(sim, cheat)
    assert t.daily_quota == 6
    assert isinstance(t.daily_quota, int)
    assert (await _trust(sim, honest1)).consecutive_valid == 1
    h = await sim.get(Host, cheat)
    assert (h.results_invalid, h.consecutive_valid) == (1, 0)

    async with sim.sm() as s:
        status = await server_status(s, now=T0 + 3, active_window_s=3600)
        details = await host_records.host_details(s, now=T0 + 3)
    by_host = {h.host_id: h for h in details}
    (cheat_trust,) = by_host[cheat].trust
    assert cheat_trust.invalid == 4
    assert not cheat_trust.trusted
    assert status.hosts_trusted == 0  # threshold 2 not reached yet


async def test_daily_quota_limits_dispatch(sim: Sim) -> None:
    job_id = await sim.start(make_spec(shards=3))
    a = await sim.add_host("a")
    await sim.transition(T0)
    assert len(await sim.wus(job_id)) == 3
    async with sim.sm() as s:
        row = await trust.get_trust(s, a, "process", cpus=2)
        row.daily_quota = 1
        s.add(row)
        await s.commit()
    assert len(await _claim(sim, a, T0)) == 1
    assert await _claim(sim, a, T0 + 1) == []  # spent for today
    assert (await _trust(sim, a)).quota_used_today == 1
    assert len(await _claim(sim, a, T0 + trust.SECONDS_PER_DAY)) == 1  # a new day


# ----------------------------------------------------------------------------- late work


async def _upload_real(sim: Sim, host_id: int, rid: int, now: float) -> tuple[str, bool, bool]:
    async with sim.sm() as s:
        host = await s.get(Host, host_id)
        assert host is not None
        target = await uploads.prepare_upload(s, host, rid)
        wu = target.workunit
        body = sim.output(wu, noise=0.01)
        return await uploads.accept_upload(
            s, target, body, blobs=sim.blobs, specs=uploads.WeightsSpecCache(sim.blobs), now=now
        )


async def test_late_result_accepted_once_while_needed(sim: Sim) -> None:
    job_id = await sim.start(make_spec(shards=1))
    a = await sim.add_host("a")
    await sim.transition(T0)
    (wu,) = await sim.wus(job_id)
    (rid,) = await _claim(sim, a, T0)
    await sim.transition(T0 + 101)  # past the deadline: no_reply, a new result
    assert (await sim.get(Result, rid)).outcome == Outcome.no_reply
    assert (await sim.get(Host, a)).results_error == 1
    assert (await _trust(sim, a)).error == 1

    sha, duplicate, late = await _upload_real(sim, a, rid, T0 + 102)
    assert (duplicate, late) == (False, True)
    again = await _upload_real(sim, a, rid, T0 + 103)  # a retried upload: same bytes
    assert again == (sha, True, True)
    assert (await sim.get(Host, a)).results_error == 0  # the error taken back, once
    assert (await _trust(sim, a)).error == 0
    await sim.cycle(T0 + 104)
    wu = await sim.get(WorkUnit, wu.id)
    assert wu.state == WorkUnitState.done
    assert wu.canonical_result_id == rid
    # the replacement result is no longer needed
    others = [r for r in await sim.results(wu.id) if r.id != rid]
    assert [r.outcome for r in others] == [Outcome.didnt_need]


async def test_too_late_result_recorded_never_merged(sim: Sim) -> None:
    job_id = await sim.start(make_spec(shards=1, rounds=1))
    a, b = await sim.add_host("a"), await sim.add_host("b")
    await sim.transition(T0)
    (wu,) = await sim.wus(job_id)
    (late_rid,) = await _claim(sim, a, T0)
    await sim.transition(T0 + 101)
    (rb,) = await _claim(sim, b, T0 + 101)
    await sim.upload(rb, T0 + 102)
    await sim.cycle(T0 + 102)
    assert (await sim.get(WorkUnit, wu.id)).state == WorkUnitState.done
    await sim.advance(T0 + 103)

    for attempt in range(2):  # the second attempt changes nothing
        with pytest.raises(Gone):
            await _upload_real(sim, a, late_rid, T0 + 104 + attempt)
        r = await sim.get(Result, late_rid)
        assert (r.outcome, r.validate_state, r.late) == (
            Outcome.no_reply,
            ValidateState.too_late,
            True,
        )
        assert r.output_sha256 is None
        assert (await sim.get(Host, a)).results_error == 1
    async with sim.sm() as s:
        successes = (
            await s.exec(
                select(Result.id).where(
                    col(Result.workunit_id) == wu.id, col(Result.outcome) == Outcome.success
                )
            )
        ).all()
    assert successes == [rb]
    assert all(r.server_state == ServerState.over for r in await sim.results(wu.id))
