"""Figures from one simulated run: CPU per request type, component shares, units/day,
round times, offered load and the checks the tests assert; and the rich tables."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from bench import common
from bench.scalesim.engine import Engine
from bench.scalesim.server import SimServer
from work_server.daemons.roster import DAEMON_NAMES, ROSTER
from work_server.db.models import Job, Outcome, Result, WorkUnit, WorkUnitState

DAEMON_OPS = DAEMON_NAMES
#: the daemons paced by ``daemon_interval_s`` (the file deleter has its own interval)
PIPELINE_OPS = tuple(spec.name for spec in ROSTER if spec.pipeline)
#: log entries that split a call by its outcome (with work / without): not added twice
SPLIT = (
    "work_request_claim",
    "work_request_empty",
    *(f"{d}_{x}" for d in DAEMON_OPS for x in ("busy", "idle", "woken_idle")),
)
ERRORS = (Outcome.client_error, Outcome.no_reply, Outcome.validate_error)


async def analyse(
    engine: Engine,
    server: SimServer,
    job_id: int,
    *,
    baseline: dict[str, float],
    calibrated_empty_cpu_s: float,
    default_retry_after_s: float,
    wall_s: float,
) -> dict[str, Any]:
    log = server.log.summary()
    cpu = {k: v["cpu_s"] for k, v in log.items() if k not in SPLIT}
    fluid = engine.c.fluid_cpu
    components = {
        "work requests": cpu.get("work_request", 0.0) + fluid["idle_polls"],
        "heartbeats": cpu.get("heartbeat", 0.0) + fluid["heartbeats"],
        "uploads": cpu.get("upload", 0.0),
        "failure reports": cpu.get("failure_report", 0.0),
        **{name: cpu.get(name, 0.0) for name in DAEMON_OPS},
    }
    total_cpu = sum(components.values())
    sim_s = engine.t - engine.t0
    wus: list[WorkUnit] = await server.rows(WorkUnit)
    results: list[Result] = await server.rows(Result)
    job: Job = (await server.rows(Job))[0]
    rounds = await server.rounds(job_id)
    done_units = sum(1 for w in wus if w.state == WorkUnitState.done)
    # marginal scheduling CPU per completed unit: requests that got or returned work, the
    # daemon passes that handled something and the woken ones that found nothing (work
    # caused them); scheduled idle passes are a fixed load, below
    sched_ops = ["work_request_claim", "upload", "failure_report"]
    sched_ops += [f"{d}_{x}" for d in DAEMON_OPS for x in ("busy", "woken_idle")]
    sched_cpu = sum(log.get(name, {}).get("cpu_s", 0.0) for name in sched_ops)
    cpu_per_unit = sched_cpu / done_units if done_units else float("nan")
    idle_daemons_2s = sum(_median(log, f"{d}_idle") for d in PIPELINE_OPS) / 2.0
    c_empty = _mean(engine.c_empty)
    c_hb = _mean(engine.c_heartbeat)
    avail = engine.cfg.model.availability()
    polls_at_default = engine.cfg.hosts * avail / default_retry_after_s
    outcomes = Counter(r.outcome for r in results)
    return {
        "hosts": engine.cfg.hosts,
        "retry_after_s": engine.cfg.retry_after_s,
        "availability": avail,
        "job_state": job.state,
        "sim_s": sim_s,
        "job_s": (job.finished_at or engine.t) - (job.started_at or engine.t0),
        "rounds": [
            {
                "number": r.number,
                "state": r.state,
                "duration_s": (r.closed_at or engine.t) - r.started_at,
                "results_success": r.results_success,
                "results_error": r.results_error,
                "results_no_reply": r.results_no_reply,
            }
            for r in rounds
        ],
        "units_done": done_units,
        "units_failed": sum(1 for w in wus if w.state == WorkUnitState.failed),
        "results": {
            "rows": len(results),
            "sent": sum(1 for r in results if r.sent_at is not None),
            "outcomes": dict(outcomes),
            "late": sum(1 for r in results if r.late),
        },
        "sim": {
            "claims": engine.c.claims,
            "empty_polls_explicit": engine.c.polls_empty,
            "idle_polls_fluid": engine.c.virtual_polls,
            "heartbeats_fluid": engine.c.virtual_heartbeats,
            "uploads": engine.c.uploads,
            "failures": engine.c.failures,
            "failures_after_deadline": engine.c.failures_gone,
            "aborted_by_heartbeat": engine.c.aborted,
            "events": engine.c.events,
            "server_calls": engine.c.now_calls,
        },
        "cpu_ms": {k: v["cpu_ms_median"] for k, v in log.items()},
        "cpu_ms_mean": {k: v["cpu_ms_mean"] for k, v in log.items()},
        "wall_ms": {k: v["wall_ms_mean"] for k, v in log.items()},
        "counts": {k: v["count"] for k, v in log.items()},
        "baseline_ms": baseline,
        "idle_poll_cpu_ms": 1000 * c_empty,
        "idle_poll_cpu_ms_calibration": 1000 * calibrated_empty_cpu_s,
        "heartbeat_cpu_ms": 1000 * c_hb,
        "components_cpu_s": components,
        "components_share": _shares(components),
        # the same without idle polls and heartbeats: what the scheduling work itself costs
        "work_share": _shares(
            {
                "claims": log.get("work_request_claim", {}).get("cpu_s", 0.0),
                **{k: components[k] for k in ("uploads", "failure reports", *DAEMON_OPS)},
            }
        ),
        "server_utilisation": total_cpu / sim_s if sim_s else 0.0,
        "mean_background_load": engine.c.rho_time / sim_s if sim_s else 0.0,
        "overloaded_s": engine.c.overloaded_s,
        "scheduling_cpu_per_unit_ms": 1000 * cpu_per_unit,
        "units_per_day_sustained": 86400 * (1 - idle_daemons_2s) / cpu_per_unit
        if done_units
        else 0.0,
        "claims_per_cpu_s": 1000 / log["work_request_claim"]["cpu_ms_mean"]
        if "work_request_claim" in log
        else 0.0,
        # the daemons' idle passes at the server's default 2 s intervals: a fixed load
        "daemon_idle_load_at_2s": idle_daemons_2s,
        "default_retry_after": {
            "retry_after_s": default_retry_after_s,
            "idle_polls_per_s": polls_at_default,
            "offered_load": polls_at_default * c_empty,
            "saturating_hosts": default_retry_after_s / (avail * c_empty) if c_empty else 0.0,
        },
        "checks": checks(engine, wus, results),
        "wall_s": wall_s,
    }


def checks(engine: Engine, wus: list[WorkUnit], results: list[Result]) -> dict[str, Any]:
    """Correctness properties (asserted by tests/bench/test_scale_sim.py)."""
    by_wu: dict[int, list[Result]] = defaultdict(list)
    for r in results:
        by_wu[r.workunit_id].append(r)
    excess, dup_hosts, too_many = 0, 0, 0
    for wu in wus:
        rs = by_wu.get(wu.id or 0, [])
        sent = [r for r in rs if r.sent_at is not None]
        replaced = sum(1 for r in sent if r.outcome in ERRORS or r.late)
        excess = max(excess, len(sent) - replaced - wu.target_nresults)
        hosts = [r.host_id for r in sent]
        dup_hosts += len(hosts) - len(set(hosts))
        too_many += len(rs) > wu.max_total_results
    outcomes = Counter(r.outcome for r in results)
    up = engine.c.uploads
    return {
        "max_replicas_beyond_target": excess,
        "duplicate_hosts": dup_hosts,
        "units_over_max_total_results": too_many,
        "claims_match_sent": engine.c.claims == sum(1 for r in results if r.sent_at is not None),
        "uploads_match_successes": up["accepted"] + up["late"] == outcomes[Outcome.success],
        "failures_match_client_errors": engine.c.failures == outcomes[Outcome.client_error],
        "clock_monotone": engine.last_now >= engine.t0 and engine.server_free >= engine.last_now,
    }


def _shares(parts: dict[str, float]) -> dict[str, float]:
    total = sum(parts.values())
    return {k: v / total for k, v in parts.items()} if total else {}


def _median(log: dict[str, dict[str, float]], name: str) -> float:
    return log[name]["cpu_ms_median"] / 1000 if name in log else 0.0


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _h(s: float) -> str:
    return f"{s / 3600:.2f} h"


def print_tables(scenarios: list[dict[str, Any]]) -> None:
    console = common.console()
    t = common.table(
        "Scale model: the same job (quorum 2) per host count; times simulated",
        ["hosts", "poll every", "job", "rounds", "ok/err/late", "server busy", "units/day"],
    )
    for s in scenarios:
        o = s["results"]["outcomes"]
        t.add_row(
            f"{s['hosts']:,}",
            f"{s['retry_after_s']:.0f} s",
            f"{_h(s['job_s'])}" + ("" if s["job_state"] == "completed" else f" {s['job_state']}"),
            " ".join(_h(r["duration_s"]) for r in s["rounds"]),
            f"{o.get('success', 0)}/{o.get('client_error', 0)}/{o.get('no_reply', 0)}",
            f"{100 * s['server_utilisation']:.1f}%",
            f"{s['units_per_day_sustained']:,.0f}",
        )
    console.print(t)
    hosts = [f"{s['hosts']:,}" for s in scenarios]

    t = common.table(
        "Server CPU per call, ms (median; daemons per pass)", ["call", *hosts], left={"call"}
    )
    for label, key in (
        ("empty transaction", "empty_transaction"),
        ("bare claim UPDATE", "bare_claim_update"),
    ):
        t.add_row(
            f"[dim]{label} (baseline)[/dim]", *(f"{s['baseline_ms'][key]:.2f}" for s in scenarios)
        )
    for op in OPS:
        t.add_row(op.replace("_", " "), *(_ms(s, op) for s in scenarios))
    t.add_row("claim / bare UPDATE", *(_ratio(s) for s in scenarios))
    console.print(t)

    t = common.table(
        "Share of server CPU by component (idle polls and heartbeats included)",
        ["component", *hosts],
        left={"component"},
    )
    for n in scenarios[0]["components_share"] if scenarios else []:
        t.add_row(n, *(f"{100 * s['components_share'][n]:.1f}%" for s in scenarios))
    console.print(t)
    t = common.table(
        "Share of the scheduling work (without idle polls and heartbeats)",
        ["component", *hosts],
        left={"component"},
    )
    for n in scenarios[0]["work_share"] if scenarios else []:
        t.add_row(n, *(f"{100 * s['work_share'].get(n, 0.0):.1f}%" for s in scenarios))
    console.print(t)
    for s in scenarios:
        d = s["default_retry_after"]
        console.print(
            f"{s['hosts']:>7,} hosts: an idle poll costs {s['idle_poll_cpu_ms']:.2f} ms; at "
            f"retry_after_s={d['retry_after_s']:.0f} s: {d['idle_polls_per_s']:,.0f} polls/s, "
            f"load {d['offered_load']:.2f}; saturates at ~{d['saturating_hosts']:,.0f} hosts"
        )


OPS = (
    "work_request_claim",
    "work_request_empty",
    "upload",
    "failure_report",
    "heartbeat",
    "transitioner_idle",
    "transitioner_busy",
    "validator_idle",
    "validator_busy",
    "round_closer_idle",
    "round_closer_busy",
    "work_generator_idle",
    "work_generator_busy",
    "job_finisher_idle",
    "job_finisher_busy",
    "file_deleter",
)


def _ms(s: dict[str, Any], op: str) -> str:
    return f"{s['cpu_ms'][op]:.2f}" if op in s["cpu_ms"] else "-"


def _ratio(s: dict[str, Any]) -> str:
    bare = s["baseline_ms"]["bare_claim_update"]
    claim = s["cpu_ms"].get("work_request_claim")
    return f"{claim / bare:.1f}x" if claim and bare else "-"
