"""The round closer's screening of canonical results (``MergeSpec.screen_norm_ratio``)."""

from __future__ import annotations

from sqlmodel import col

from tests.work_server.daemons.conftest import T0, Sim, make_spec
from work_server.db.models import Host, Job, Outcome, Result, Round, RoundState, ValidateState
from work_server.merge.clipping import delta_norm
from work_server.ml.shards import decode_weights


async def _play_round(sim: Sim, job_id: int, noises: list[float]) -> tuple[list[int], list[int]]:
    """One host per work unit uploads the input weights + ``noise``; returns hosts, results."""
    hosts = [await sim.add_host(f"h{i}") for i in range(len(noises))]
    await sim.transition(T0)
    result_ids: list[int] = []
    for i, (wu, host, noise) in enumerate(
        zip(await sim.wus(job_id, 1), hosts, noises, strict=True)
    ):
        (r,) = await sim.claim_all(wu.id, [host], T0)
        assert r.id is not None
        await sim.upload(r.id, T0 + 5, noise=noise, seed=i)
        result_ids.append(r.id)
    await sim.cycle(T0 + 5)
    return hosts, result_ids


async def test_screened_result_is_invalid_and_left_out(sim: Sim) -> None:
    spec = make_spec(shards=4, rounds=2, merge={"screen_norm_ratio": 5.0})
    job_id = await sim.start(spec)
    previous_sha = (await sim.get(Job, job_id)).model_sha256
    hosts, results = await _play_round(sim, job_id, [0.01, 0.01, 1.0, 0.01])
    assert await sim.close_rounds(T0 + 6) == 1

    bad: Result = await sim.get(Result, results[2])
    assert (bad.outcome, bad.validate_state) == (Outcome.validate_error, ValidateState.invalid)
    assert bad.error_reason == "screened"
    assert "median" in (bad.error_detail or "")
    for rid in results[:2] + results[3:]:
        good: Result = await sim.get(Result, rid)
        assert (good.outcome, good.validate_state) == (Outcome.success, ValidateState.valid)
        assert good.error_reason is None

    bad_host: Host = await sim.get(Host, hosts[2])
    assert (bad_host.results_invalid, bad_host.consecutive_valid) == (1, 0)
    assert bad_host.results_valid == 0  # counted once: invalid (the validator's valid taken back)
    for h in hosts[:2] + hosts[3:]:
        host: Host = await sim.get(Host, h)
        assert (host.results_invalid, host.consecutive_valid) == (0, 1)

    r1 = (await sim.all(Round, col(Round.job_id) == job_id))[0]
    assert r1.state == RoundState.done
    assert (r1.results_success, r1.results_error) == (3, 1)
    # the merge ignored the noisy update: the new weights moved like the quiet ones (~0.01)
    job = await sim.get(Job, job_id)
    previous = decode_weights(sim.blobs.get(previous_sha))
    merged = decode_weights(sim.blobs.get(job.model_sha256))
    quiet = delta_norm(
        decode_weights(sim.blobs.get((await sim.get(Result, results[0])).output_sha256)), previous
    )
    assert delta_norm(merged, previous) < quiet
    await sim.generate_work(T0 + 6)
    assert (await sim.get(Job, job_id)).current_round == 2


async def test_screening_off_by_default(sim: Sim) -> None:
    job_id = await sim.start(make_spec(shards=4, rounds=1))
    _, results = await _play_round(sim, job_id, [0.01, 0.01, 1.0, 0.01])
    assert await sim.close_rounds(T0 + 6) == 1
    for rid in results:
        assert (await sim.get(Result, rid)).outcome == Outcome.success
    (r1,) = await sim.all(Round, col(Round.job_id) == job_id)
    assert (r1.results_success, r1.results_error) == (4, 0)
