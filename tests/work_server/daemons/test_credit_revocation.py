"""Credit granted by the validator is taken back, exactly once, when the result is later
found invalid: screened out of the merge by the round closer (``services.credit``)."""

from __future__ import annotations

import pytest

from tests.work_server.daemons.conftest import T0, Sim, make_spec
from work_server.db.models import Host, HostRuntimeTrust, Outcome, Result, ValidateState
from work_server.services import credit


async def _counters(sim: Sim, host_id: int) -> tuple[int, int, float, int, int]:
    host: Host = await sim.get(Host, host_id)
    pair: HostRuntimeTrust = await sim.get(HostRuntimeTrust, (host_id, "process"))
    return host.results_valid, host.results_invalid, host.credit, pair.valid, pair.invalid


async def test_screened_result_loses_its_credit_once(sim: Sim) -> None:
    job_id = await sim.start(make_spec(shards=4, rounds=2, merge={"screen_norm_ratio": 5.0}))
    hosts = [await sim.add_host(f"h{i}") for i in range(4)]
    await sim.transition(T0)
    wus = await sim.wus(job_id, 1)
    results: list[int] = []
    for i, (wu, host, noise) in enumerate(zip(wus, hosts, [0.01, 0.01, 1.0, 0.01], strict=True)):
        (r,) = await sim.claim_all(wu.id, [host], T0)
        assert r.id is not None
        await sim.upload(r.id, T0 + 5, noise=noise, seed=i)
        results.append(r.id)
    await sim.cycle(T0 + 5)
    earned = credit.result_credit(wus[2].num_samples, wus[2].task)
    assert earned > 0
    valid, invalid, granted, pair_valid, pair_invalid = await _counters(sim, hosts[2])
    assert (valid, invalid, pair_valid, pair_invalid) == (1, 0, 1, 0)
    assert granted == pytest.approx(earned)

    assert await sim.close_rounds(T0 + 6) == 1
    bad: Result = await sim.get(Result, results[2])
    assert (bad.outcome, bad.validate_state) == (Outcome.validate_error, ValidateState.invalid)
    assert bad.error_reason == credit.SCREENED
    revoked = await _counters(sim, hosts[2])
    assert revoked[:2] == (0, 1)
    assert revoked[3:] == (0, 1)
    assert revoked[2] == pytest.approx(0.0)
    for h, wu in zip(hosts[:2] + hosts[3:], wus[:2] + wus[3:], strict=True):
        kept = await _counters(sim, h)
        assert kept[:2] == (1, 0)
        assert kept[2] == pytest.approx(credit.result_credit(wu.num_samples, wu.task))

    # a second pass changes nothing: the round is closed, and the result is invalid already
    assert await sim.close_rounds(T0 + 7) == 0
    async with sim.sm() as s:
        again = await credit.invalidate(s, results[2], reason=credit.SCREENED, detail="again")
        await s.commit()
    assert not again
    assert await _counters(sim, hosts[2]) == revoked
    assert (await sim.get(Result, results[2])).error_detail == bad.error_detail


async def test_valid_count_and_credit_never_go_negative(sim: Sim) -> None:
    host_id = await sim.add_host("h")
    async with sim.sm() as s:
        await credit.revoke_valid(s, host_id, "process", 5.0)  # nothing was granted
        await s.commit()
    host: Host = await sim.get(Host, host_id)
    assert (host.results_valid, host.credit) == (0, 0.0)
