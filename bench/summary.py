"""Headline figures of each benchmark's JSON against the targets of the performance issue.

``HEADLINES[name](results_json) -> [(figure, value, target, met)]``; ``met`` is None where
the figure has no target. Used by ``bench/run_all.py`` (``make bench``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Row = tuple[str, str, str, bool | None]


def _dispatch(d: dict[str, Any]) -> list[Row]:
    ours, bare = d["yadml"], d["bare_aiohttp"]
    capacity = ours["results_per_server_cpu_s"]
    return [
        ("results/s end to end (SQLite)", f"{ours['results_per_s']:.0f}", ">= 1000", None),
        ("ratio to bare aiohttp, same load", f"{d['ratio_to_bare']:.2f}", "", None),
        ("server CPU per result", f"{ours['server_cpu_ms_per_result']:.2f} ms", "", None),
        (
            "results per server CPU-second",
            f"{capacity:.0f}",
            ">= 1000",
            capacity >= 1000,
        ),
        ("bare aiohttp per server CPU-second", f"{bare['results_per_server_cpu_s']:.0f}", "", None),
    ]


def _upload(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for size, ratio in d["ratio_to_bare"].items():
        mbps = d["results"][f"yadml {size}"]["mb_per_s"]
        rows.append(
            (
                f"{size} uploads: MB/s, ratio to discard",
                f"{mbps:.0f}, {ratio:.2f}",
                ">= 0.50",
                ratio >= 0.5,
            )
        )
    return rows


def _aggregation(d: dict[str, Any]) -> list[Row]:
    rows = d["rows"]
    big = [r for r in rows if r["params"] > 1_000_000]
    cells = big or rows
    k = max(r["k"] for r in cells)
    at = {r["policy"]: r for r in cells if r["k"] == k}
    out: list[Row] = []
    avg = at.get("simple_average")
    if avg is not None:
        out.append(
            (
                f"simple_average K={k} P={avg['params'] / 1e6:.2f}M: share of floor",
                f"{avg['floor_ratio']:.2f}",
                ">= 0.50",
                avg["floor_ratio"] >= 0.5,
            )
        )
        for policy in ("median", "trimmed_mean"):
            r = at.get(policy)
            if r is not None:
                x = r["seconds"] / avg["seconds"]
                out.append((f"{policy} / simple_average", f"{x:.1f}x", "<= 5x", x <= 5))
        out.append(
            ("peak extra memory (simple_average)", f"{avg['peak_extra_mb']:.0f} MB", "", None)
        )
    return out


def _scale(d: dict[str, Any]) -> list[Row]:
    last = d["scenarios"][-1]
    rows: list[Row] = [
        (
            "hosts simulated (largest run)",
            f"{last['hosts']:,}",
            "100,000",
            last["hosts"] >= 100_000,
        )
    ]
    found = _find(last, "units_per_day_sustained")
    if found is not None:
        rows.append(("units/day the scheduling logic sustains (1 CPU)", f"{found:,.0f}", "", None))
    sat = _find(last, "saturating_hosts")
    if sat is not None:
        rows.append(("hosts that saturate one process, 2 s polls", f"{sat:,.0f}", "", None))
    return rows


def _find(d: Any, key: str) -> Any:
    """The first value of ``key`` anywhere in nested dicts/lists (None if absent)."""
    if isinstance(d, dict):
        if key in d:
            return d[key]
        items: list[Any] = list(d.values())
    elif isinstance(d, list):
        items = d
    else:
        return None
    for v in items:
        found = _find(v, key)
        if found is not None:
            return found
    return None


def _update_size(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for enc in ("fp16", "int8"):
        e = d["summary"].get(enc)
        if e is None:
            continue
        rows.append(
            (
                f"{enc}: upload smaller by, accuracy change (worst)",
                f"{e['up_ratio_vs_fp32']:.2f}x, {e['accuracy_delta_pt_worst']:+.2f} pt",
                ">= 2x at <= 0.1 pt loss",
                bool(e["meets_target"]),
            )
        )
    return rows


def _executors(d: dict[str, Any]) -> list[Row]:
    s = d["summary_median"]
    rows: list[Row] = []
    for name, label in (
        ("process", "process (cold) fixed cost"),
        ("process_warm", "process (warm) fixed cost"),
        ("docker", "docker (cold) fixed cost"),
        ("docker_warm", "docker (warm) fixed cost"),
    ):
        if name in s:
            r = s[name]
            rows.append((label, f"{r['fixed_s']:.2f} s ({100 * r['fixed_share']:.1f}%)", "", None))
    vm = d.get("vm")
    if vm:
        ready = vm["summary_median"]["ready_s"]
        mb = vm["sizes_mb"]
        rows.append(
            (
                f"vm ({vm['accel']}) boot to trainer",
                f"{ready:.1f} s",
                f"vs {vm['reference']['start_s']:.0f} s (VirtualBox, origin)",
                ready < vm["reference"]["start_s"],
            )
        )
        rows.append(
            (
                "vm image download / on disk",
                f"{mb['download_qcow2_gzip']:.0f} / {mb['qcow2']:.0f} MB",
                f"vs {vm['reference']['download_gb']:.0f} GB",
                mb["download_qcow2_gzip"] < 1000 * vm["reference"]["download_gb"],
            )
        )
    return rows


def _time_to_accuracy(d: dict[str, Any]) -> list[Row]:
    c = d["centralized"]
    rows: list[Row] = [
        (
            f"centralized to {d['target']:.0%}",
            f"{c['wall_s']:.0f} s ({c['epochs_to_target']} epochs)",
            "",
            None,
        )
    ]
    for s in d["systems"]:
        rows.append(
            (
                f"system ({s['executor']}), ratio",
                f"{s['wall_s']:.0f} s ({s['rounds_to_target']} rounds), {s['ratio']:.2f}x",
                f"<= {d['target_ratio']}x",
                bool(s["reached"]) and s["ratio"] <= d["target_ratio"],
            )
        )
    return rows


def _dispatch_scaling(d: dict[str, Any]) -> list[Row]:
    return [
        (
            f"{r['database']}, {r['processes']} process(es)",
            f"{r['results_per_s']:.0f} results/s",
            "",
            None,
        )
        for r in d["runs"]
    ]


HEADLINES: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "dispatch": _dispatch,
    "upload": _upload,
    "aggregation": _aggregation,
    "update_size": _update_size,
    "executor_overhead": _executors,
    "time_to_accuracy": _time_to_accuracy,
    "scale_sim": _scale,
    "dispatch_scaling": _dispatch_scaling,
}
