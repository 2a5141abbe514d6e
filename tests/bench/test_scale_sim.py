"""The scale model (``bench.scale_sim``) on a tiny configuration: correctness of the
simulation and of the scheduling it drives, never timing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.scalesim.hosts import HostModel, Population
from bench.scalesim.scenario import T0, job_spec, run_scenario
from bench.scalesim.state import IndexedSet


def assert_consistent(s: dict[str, Any], *, shards: int) -> None:
    assert s["job_state"] == "completed"
    # every unit of the (single) round ended done, or failed after too many errors
    assert s["units_done"] >= 1
    assert s["units_done"] + s["units_failed"] == shards
    assert [r["state"] for r in s["rounds"]] == ["done"]
    checks = s["checks"]
    # no unit got more than target_nresults replicas, except to replace errors/late ones
    assert checks["max_replicas_beyond_target"] <= 0
    assert checks["duplicate_hosts"] == 0  # replicas of a unit go to distinct hosts
    assert checks["units_over_max_total_results"] == 0
    # every claim the simulation saw is a sent result, every upload a success...
    assert checks["claims_match_sent"]
    assert checks["uploads_match_successes"]
    assert checks["failures_match_client_errors"]
    assert checks["clock_monotone"]
    sim = s["sim"]
    results = s["results"]
    assert sim["claims"] == results["sent"] >= 2 * shards
    assert sum(results["outcomes"].values()) == results["rows"]
    # ...and the CPU accounted for by component is the server's total
    shares = s["components_share"]
    assert abs(sum(shares.values()) - 1.0) < 1e-9
    assert s["job_s"] > 0
    assert s["sim_s"] >= s["job_s"]
    json.dumps(s)  # what bench.scale_sim writes: plain JSON types only


async def test_tiny_job_completes_with_consistent_accounting(tmp_path: Path) -> None:
    spec = job_spec(shards=10, rounds=1, delay_bound_s=3600.0)
    s = await run_scenario(200, spec, tmp_path, daemon_interval_s=60.0, seed=1)
    assert_consistent(s, shards=10)
    assert s["retry_after_s"] >= 2.0


async def test_faulty_hosts_are_replaced_and_still_accounted(tmp_path: Path) -> None:
    """Many errors and late results: the transitioner reissues, counts still add up."""
    model = HostModel(flaky_fraction=0.5, flaky_error_rate=0.3, late_rate=0.3)
    spec = job_spec(shards=10, rounds=1, delay_bound_s=900.0)
    s = await run_scenario(200, spec, tmp_path, daemon_interval_s=60.0, seed=2, model=model)
    assert_consistent(s, shards=10)
    outcomes = s["results"]["outcomes"]
    assert outcomes.get("client_error", 0) + outcomes.get("no_reply", 0) > 0
    assert s["results"]["sent"] > 20  # replacements were sent


def test_population_is_in_its_stationary_availability_mix() -> None:
    model = HostModel()
    pop = Population(20000, model, np.random.default_rng(0), t0=T0)
    assert abs(float(pop.online.mean()) - model.availability()) < 0.03
    assert bool((pop.next_toggle > T0).all())
    assert float(np.median(pop.speed_gflops)) == pytest.approx(model.speed_median_gflops, rel=0.05)


def test_indexed_set() -> None:
    s = IndexedSet()
    for x in (5, 7, 9):
        s.add(x)
    s.add(7)
    s.discard(5)
    s.discard(42)
    assert len(s) == 2
    assert 7 in s
    assert 9 in s
    assert 5 not in s
    assert sorted(s.items) == [7, 9]
    assert all(s.items[i] == x for x, i in s.pos.items())
