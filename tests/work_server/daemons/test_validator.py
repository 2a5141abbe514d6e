from __future__ import annotations

import torch

from tests.work_server.daemons.conftest import T0, Sim, make_spec
from work_server.daemons.validator import agree, check_weights
from work_server.db.models import (
    DaemonRun,
    Host,
    Outcome,
    ServerState,
    ValidateState,
    WorkUnit,
    WorkUnitState,
)


def test_agree_is_relative_with_absolute_floor() -> None:
    a = {"w": torch.tensor([100.0, 0.0])}
    assert agree(a, {"w": torch.tensor([100.009, 0.0])}, 1e-4)  # 0.009 <= 1e-4 * 100
    assert not agree(a, {"w": torch.tensor([100.02, 0.0])}, 1e-4)
    small = {"w": torch.tensor([1e-3])}
    assert agree(small, {"w": torch.tensor([1.05e-3])}, 1e-4)  # |diff| 5e-5 <= 1e-4 * 1
    assert not agree(small, {"w": torch.tensor([1.2e-3])}, 1e-4)
    assert not agree(a, {"v": torch.tensor([100.0, 0.0])}, 1e-4)


def test_check_weights_rejects_layout_and_non_finite() -> None:
    from safetensors.torch import save

    ref = {"w": torch.zeros(2, 3), "b": torch.zeros(3)}
    ok, reason = check_weights(save({"w": torch.ones(2, 3), "b": torch.ones(3)}), ref)
    assert ok is not None
    assert reason is None
    assert "shape" in str(check_weights(save({"w": torch.ones(3, 2), "b": torch.ones(3)}), ref)[1])
    f64 = {"w": torch.ones(2, 3, dtype=torch.float64), "b": torch.ones(3)}
    assert "dtype" in str(check_weights(save(f64), ref)[1])
    assert "names" in str(check_weights(save({"w": torch.ones(2, 3)}), ref)[1])
    inf = {"w": torch.ones(2, 3), "b": torch.tensor([1.0, float("inf"), 0.0])}
    assert "non-finite" in str(check_weights(save(inf), ref)[1])
    assert "safetensors" in str(check_weights(b"garbage", ref)[1])


async def test_quorum_one_first_good_result_is_canonical(sim: Sim) -> None:
    job_id = await sim.start(make_spec(shards=1))
    host = await sim.add_host()
    await sim.transition(T0)
    (wu,) = await sim.wus(job_id)
    (r,) = await sim.claim_all(wu.id, [host], T0)
    await sim.upload(r.id, T0 + 5, noise=0.01)
    await sim.transition(T0 + 5)
    assert (await sim.get(WorkUnit, wu.id)).need_validate

    assert await sim.validate(T0 + 6) == 1
    after = await sim.get(WorkUnit, wu.id)
    assert after.state == WorkUnitState.done
    assert after.canonical_result_id == r.id
    assert not after.need_validate
    assert after.transition_time == T0 + 6
    assert (await sim.get(type(r), r.id)).validate_state == ValidateState.valid
    h = await sim.get(Host, host)
    assert (h.results_valid, h.consecutive_valid) == (1, 1)
    assert h.credit == wu.num_samples * 1 / 1000  # num_samples * local_epochs / 1000
    assert (await sim.get(DaemonRun, "validator")).last_run == T0 + 6


async def test_quorum_two_agreeing_replicas(sim: Sim) -> None:
    spec = make_spec(shards=1, replication={"min_quorum": 2, "target_nresults": 2})
    job_id = await sim.start(spec)
    h1, h2 = await sim.add_host("a"), await sim.add_host("b")
    await sim.transition(T0)
    (wu,) = await sim.wus(job_id)
    r1, r2 = await sim.claim_all(wu.id, [h1, h2], T0)
    await sim.upload(r1.id, T0 + 1, noise=0.01, seed=1)
    await sim.transition(T0 + 1)
    assert not (await sim.get(WorkUnit, wu.id)).need_validate  # 1 < min_quorum
    await sim.upload(r2.id, T0 + 2, noise=0.01, seed=1)  # identical training
    await sim.cycle(T0 + 2)
    after = await sim.get(WorkUnit, wu.id)
    assert after.state == WorkUnitState.done
    assert after.canonical_result_id == r1.id
    states = [r.validate_state for r in await sim.results(wu.id)]
    assert states == [ValidateState.valid, ValidateState.valid]
    assert (await sim.get(Host, h2)).results_valid == 1


async def test_quorum_two_disagreement_asks_for_more_bounded(sim: Sim) -> None:
    spec = make_spec(
        shards=1,
        replication={"min_quorum": 2, "target_nresults": 2, "max_total_results": 4},
    )
    job_id = await sim.start(spec)
    hosts = [await sim.add_host(n) for n in "abcd"]
    await sim.transition(T0)
    (wu,) = await sim.wus(job_id)
    r1, r2 = await sim.claim_all(wu.id, hosts[:2], T0)
    await sim.upload(r1.id, T0 + 1, noise=0.01, seed=1)
    await sim.upload(r2.id, T0 + 1, noise=0.01, seed=2)  # different
    await sim.cycle(T0 + 1)

    after = await sim.get(WorkUnit, wu.id)
    assert after.state == WorkUnitState.active
    assert after.target_nresults == 3
    results = await sim.results(wu.id)
    assert [r.validate_state for r in results[:2]] == [ValidateState.inconclusive] * 2
    assert len(results) == 3
    assert results[2].server_state == ServerState.unsent

    # a third replica that disagrees with both: one more (the 4th, the last allowed)
    (r3,) = await sim.claim_all(wu.id, [hosts[2]], T0 + 2)
    await sim.upload(r3.id, T0 + 3, noise=0.01, seed=3)
    await sim.cycle(T0 + 3)
    after = await sim.get(WorkUnit, wu.id)
    assert after.target_nresults == 4
    assert len(await sim.results(wu.id)) == 4

    # the 4th agrees with the 2nd: quorum, 2nd canonical; 1st and 3rd invalid
    (r4,) = await sim.claim_all(wu.id, [hosts[3]], T0 + 4)
    await sim.upload(r4.id, T0 + 5, noise=0.01, seed=2)
    await sim.cycle(T0 + 5)
    after = await sim.get(WorkUnit, wu.id)
    assert after.state == WorkUnitState.done
    assert after.canonical_result_id == r2.id
    states = [r.validate_state for r in await sim.results(wu.id)]
    assert states == [
        ValidateState.invalid,
        ValidateState.valid,
        ValidateState.invalid,
        ValidateState.valid,
    ]
    assert (await sim.get(Host, hosts[0])).results_invalid == 1
    assert (await sim.get(Host, hosts[0])).consecutive_valid == 0


async def test_quorum_never_reached_fails_at_max_total(sim: Sim) -> None:
    spec = make_spec(
        shards=1,
        replication={"min_quorum": 2, "target_nresults": 2, "max_total_results": 3},
    )
    job_id = await sim.start(spec)
    hosts = [await sim.add_host(n) for n in "abc"]
    await sim.transition(T0)
    (wu,) = await sim.wus(job_id)
    for i, r in enumerate(await sim.claim_all(wu.id, hosts[:2], T0)):
        await sim.upload(r.id, T0 + 1, noise=0.01, seed=10 + i)
    await sim.cycle(T0 + 1)
    (r3,) = await sim.claim_all(wu.id, [hosts[2]], T0 + 2)
    await sim.upload(r3.id, T0 + 3, noise=0.01, seed=30)
    await sim.cycle(T0 + 3)
    after = await sim.get(WorkUnit, wu.id)
    assert after.state == WorkUnitState.failed
    assert "max_total_results" in after.error
    assert len(await sim.results(wu.id)) == 3


async def test_nan_output_is_a_validate_error(sim: Sim) -> None:
    job_id = await sim.start(make_spec(shards=1))
    host = await sim.add_host()
    await sim.transition(T0)
    (wu,) = await sim.wus(job_id)
    (r,) = await sim.claim_all(wu.id, [host], T0)
    await sim.upload(r.id, T0 + 1, nan=True)
    await sim.cycle(T0 + 1)

    bad, replacement = await sim.results(wu.id)
    assert bad.outcome == Outcome.validate_error
    assert bad.validate_state == ValidateState.invalid
    assert "non-finite" in str(bad.error_detail)
    assert replacement.server_state == ServerState.unsent
    assert (await sim.get(WorkUnit, wu.id)).state == WorkUnitState.active
    h = await sim.get(Host, host)
    assert (h.results_invalid, h.results_valid, h.credit) == (1, 0, 0.0)


async def test_success_after_done_is_credited_never_canonical(sim: Sim) -> None:
    spec = make_spec(shards=1, replication={"target_nresults": 2})  # quorum 1, 2 replicas
    job_id = await sim.start(spec)
    h1, h2 = await sim.add_host("a"), await sim.add_host("b")
    await sim.transition(T0)
    (wu,) = await sim.wus(job_id)
    r1, r2 = await sim.claim_all(wu.id, [h1, h2], T0)
    await sim.upload(r1.id, T0 + 1, noise=0.01, seed=1)
    await sim.cycle(T0 + 1)
    assert (await sim.get(WorkUnit, wu.id)).canonical_result_id == r1.id

    await sim.upload(r2.id, T0 + 2, noise=0.01, seed=1)  # still in progress: may finish
    await sim.cycle(T0 + 2)
    after = await sim.get(WorkUnit, wu.id)
    assert after.canonical_result_id == r1.id
    assert after.state == WorkUnitState.done
    assert (await sim.get(type(r2), r2.id)).validate_state == ValidateState.valid
    assert (await sim.get(Host, h2)).results_valid == 1
