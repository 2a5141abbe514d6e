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
    for key in ("units_per_day", "sustainable_units_per_day"):
        if key in last:
            rows.append(("units/day the scheduling logic sustains", f"{last[key]:,.0f}", "", None))
    return rows


HEADLINES: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "dispatch": _dispatch,
    "upload": _upload,
    "aggregation": _aggregation,
    "scale_sim": _scale,
}
