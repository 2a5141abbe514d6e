"""Dispatch throughput (control plane): simulated hosts against the real server and SQLite.

N simulated hosts (asyncio + httpx, in a separate process from the server) loop:
request work -> download the input blobs (tiny, cached per host) -> upload a result.
The same load generator then runs against a bare aiohttp server with the same three routes
answering constants: that is the HTTP stack's limit on this machine, and the ratio
(ours / bare) is the figure that survives noisy machines.

    .venv/bin/python -m bench.dispatch_throughput --units 3000 --hosts 32

Writes ``bench/results/dispatch_throughput.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench import common
from work_server import launch

OPERATOR = "bench-operator"


def tiny_weights(report: bool) -> bytes:
    import torch
    from safetensors.torch import save

    meta = None
    if report:
        meta = {"report": json.dumps({"train_loss": 0.1, "samples": 10, "elapsed_s": 0.01})}
    return save({"w": torch.zeros(16), "b": torch.ones(4)}, metadata=meta)


def seed_rows(blobs_dir: Path, units: int) -> list[list[Any]]:
    """The rows of a running job with ``units`` work units, each with one unsent result and
    tiny blobs (written to ``blobs_dir``), in batches to add and flush in order (foreign keys)."""
    import numpy as np

    from work_server.blobs import BlobStore
    from work_server.db.models import Blob, Job, Result, Round, WorkUnit
    from work_server.ml.shards import encode_shard

    blobs = BlobStore(blobs_dir)
    shard = encode_shard(np.zeros((8, 28, 28), np.uint8), np.arange(8, dtype=np.int64) % 10)
    weights = tiny_weights(report=False)
    shard_sha, weights_sha = blobs.put(shard), blobs.put(weights)
    now = time.time()
    job = Job(
        id=1,
        state="running",
        spec={"dataset": "digits"},
        current_round=1,
        created_at=now,
        started_at=now,
    )
    round_ = Round(
        id=1, job_id=1, number=1, weights_sha256=weights_sha, started_at=now, deadline=now + 86400
    )
    workunits = [
        WorkUnit(
            id=i + 1,
            job_id=1,
            round_id=1,
            shard_index=i,
            shard_sha256=shard_sha,
            weights_sha256=weights_sha,
            num_samples=8,
            task={"model": "lenet"},
            runtimes=["process"],
            delay_bound_s=3600,
            max_output_bytes=65536,
            created_at=now,
        )
        for i in range(units)
    ]
    return [
        [
            Blob(sha256=shard_sha, size=len(shard), kind="shard", created_at=now),
            Blob(sha256=weights_sha, size=len(weights), kind="weights", created_at=now),
            job,
        ],
        [round_],
        workunits,
        [Result(workunit_id=i + 1, created_at=now) for i in range(units)],
    ]


def seed_database(state_dir: Path, units: int) -> None:
    """``seed_rows`` into the server's SQLite database, its schema made by the real code."""
    import asyncio as _asyncio

    from sqlmodel import Session, create_engine

    from work_server.db.engine import create_schema, make_engine

    engine = make_engine(f"sqlite+aiosqlite:///{state_dir / 'yadml.db'}")
    _asyncio.run(_create(engine, create_schema))
    sync = create_engine(f"sqlite:///{state_dir / 'yadml.db'}")
    with Session(sync) as session:
        for batch in seed_rows(state_dir / "blobs", units):
            session.add_all(batch)
            session.flush()
        session.commit()
    sync.dispose()


def start_server(
    state: Path, tmp: Path, port: int, *, profile: Path | None = None, extra: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """``yadml-server serve`` on ``port`` without daemons (optionally under cProfile), once it
    answers; its log is ``tmp/server.log``."""
    cmd = launch.serve_command(
        port=port,
        state_dir=state,
        runs_dir=tmp / "runs",
        extra=["--no-daemons", "--log-level", "WARNING", *extra],
        interpreter_args=["-m", "cProfile", "-o", str(profile)] if profile else [],
    )
    return launch.start_server(
        cmd,
        url=f"http://127.0.0.1:{port}",
        log_path=tmp / "server.log",
        env={**os.environ, "YADML_OPERATOR_TOKEN": OPERATOR},
    )


def start_bare_server(
    source: str, tmp: Path, port: int, *args: str, health: str
) -> subprocess.Popen[bytes]:
    """The bare aiohttp baseline (``source``, a script taking the port first) on ``port``,
    once it answers ``GET <health>``; its log is ``tmp/bare.log``."""
    return launch.start_server(
        [sys.executable, "-c", source, str(port), *args],
        url=f"http://127.0.0.1:{port}",
        log_path=tmp / "bare.log",
        path=health,
    )


async def _create(engine: Any, create_schema: Any) -> None:
    await create_schema(engine)
    await engine.dispose()


# --------------------------------------------------------------------------- load generator


async def host_loop(
    client: httpx.AsyncClient,
    token: str,
    upload: bytes,
    stats: dict[str, list[float]],
    stop_at: float,
    max_units: int,
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    cache: set[str] = set()
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        r = await client.post("/api/v1/work", json={"max_units": max_units}, headers=headers)
        stats["work"].append(time.perf_counter() - t0)
        r.raise_for_status()
        units = r.json()["units"]
        if not units:
            return
        for unit in units:
            for inp in unit["inputs"]:
                if inp["sha256"] in cache:
                    continue
                t0 = time.perf_counter()
                b = await client.get(inp["url"], headers=headers)
                stats["blob"].append(time.perf_counter() - t0)
                b.raise_for_status()
                cache.add(inp["sha256"])
            t0 = time.perf_counter()
            grant = {"X-Upload-Grant": unit["upload"]["grant"]}
            u = await client.put(unit["upload"]["url"], content=upload, headers=headers | grant)
            stats["upload"].append(time.perf_counter() - t0)
            if u.status_code != 200:
                raise RuntimeError(f"upload refused: {u.status_code} {u.text}")
            stats["done"].append(time.monotonic())


async def run_load(
    base_url: str, tokens: list[str], duration: float, max_units: int
) -> dict[str, Any]:
    upload = tiny_weights(report=True)
    stats: dict[str, list[float]] = {"work": [], "blob": [], "upload": [], "done": []}
    limits = httpx.Limits(max_connections=len(tokens), max_keepalive_connections=len(tokens))
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
        start = time.monotonic()
        await asyncio.gather(
            *(host_loop(client, t, upload, stats, start + duration, max_units) for t in tokens)
        )
        wall = time.monotonic() - start

    def pct(xs: list[float], q: float) -> float:
        if not xs:
            return float("nan")
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000

    done = len(stats["done"])
    return {
        "wall_s": wall,
        "units_issued": len(stats["upload"]),
        "results_accepted": done,
        "results_per_s": done / wall if wall else 0.0,
        "work_p50_ms": pct(stats["work"], 0.5),
        "work_p99_ms": pct(stats["work"], 0.99),
        "upload_p50_ms": pct(stats["upload"], 0.5),
        "upload_p99_ms": pct(stats["upload"], 0.99),
        "requests_per_s": (len(stats["work"]) + len(stats["blob"]) + len(stats["upload"])) / wall,
        "mean_work_ms": statistics.fmean(stats["work"]) * 1000 if stats["work"] else 0.0,
    }


def worker_main(args: argparse.Namespace) -> int:
    tokens = json.loads(Path(args.tokens).read_text())
    out = asyncio.run(run_load(args.url, tokens, args.duration, args.max_units))
    print(json.dumps(out))
    return 0


# --------------------------------------------------------------------------- bare baseline

BARE_SERVER = r"""
import sys
from aiohttp import web
N = int(sys.argv[2])
unit = {"result_id": 1, "workunit_id": 1, "job_id": 1, "round": 1,
        "deadline": "2030-01-01T00:00:00Z", "runtime": "process",
        "inputs": [{"name": "shard", "sha256": "a" * 64, "size": 4, "url": "/blob/a"},
                   {"name": "weights", "sha256": "b" * 64, "size": 4, "url": "/blob/b"}],
        "task": {"model": "lenet"},
        "upload": {"url": "/up/1", "grant": "g.mac", "max_bytes": 65536}}
async def work(request):
    await request.read()
    return web.json_response({"units": [unit] * N, "retry_after_s": 0})
async def blob(request):
    return web.Response(body=b"abcd")
async def up(request):
    await request.read()
    return web.json_response({"result_id": 1})
app = web.Application()
app.add_routes([web.post("/api/v1/work", work), web.get("/blob/{x}", blob), web.put("/up/{x}", up)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_generator(
    url: str, tokens: list[str], duration: float, tmp: Path, max_units: int, server_pid: int
) -> dict[str, Any]:
    """Run the load generator in its own process; add the server's CPU time per result."""
    cpu0 = cpu_seconds(server_pid)
    tok = tmp / f"tokens-{len(tokens)}.json"
    tok.write_text(json.dumps(tokens))
    out = subprocess.run(
        common.module_command(
            "bench.dispatch_throughput",
            *("--worker", "--url", url, "--tokens", str(tok)),
            *("--duration", str(duration), "--max-units", str(max_units)),
        ),
        cwd=common.ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    cpu = cpu_seconds(server_pid) - cpu0
    done = result["results_accepted"]
    result["server_cpu_s"] = cpu
    result["server_cpu_ms_per_result"] = 1000 * cpu / done if done else float("nan")
    # what one server core sustains when the load generator does not share it
    result["results_per_server_cpu_s"] = done / cpu if cpu else float("nan")
    return result


def main() -> int:
    p = common.bench_parser(__doc__, results="dispatch_throughput")
    p.add_argument("--units", type=int, default=4000)
    p.add_argument("--hosts", type=int, default=32)
    p.add_argument("--duration", type=float, default=15.0, help="seconds per measurement")
    p.add_argument("--max-units", type=int, default=8, help="units asked for per work request")
    p.add_argument("--profile", type=Path, default=None, help="run the server under cProfile")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--tokens", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker_main(args)

    console = common.console()
    with tempfile.TemporaryDirectory(prefix="yadml-bench-") as tmpname:
        tmp = Path(tmpname)
        state = tmp / "var"
        state.mkdir()
        seed_database(state, args.units)
        port = launch.free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(state, tmp, port, profile=args.profile)
        try:
            # cpus=64: a daily quota of 3,200 units per host, so quotas never end the run
            tokens = [
                httpx.post(f"{url}/api/v1/hosts", json={"name": f"sim{i}", "cpus": 64}).json()[
                    "host_token"
                ]
                for i in range(args.hosts)
            ]
            console.print(f"yadml server: {args.hosts} hosts, {args.units} units seeded ...")
            ours = run_generator(url, tokens, args.duration, tmp, args.max_units, server.pid)
        finally:
            launch.stop_process(server)
        bport = launch.free_port()
        bare = start_bare_server(BARE_SERVER, tmp, bport, str(args.max_units), health="/blob/x")
        try:
            burl = f"http://127.0.0.1:{bport}"
            console.print("bare aiohttp baseline ...")
            base = run_generator(
                burl,
                [f"t{i}" for i in range(args.hosts)],
                args.duration,
                tmp,
                args.max_units,
                bare.pid,
            )
        finally:
            launch.stop_process(bare)

    ratio = ours["results_per_s"] / base["results_per_s"] if base["results_per_s"] else 0.0
    table = common.table(
        f"dispatch throughput, {args.hosts} simulated hosts",
        [
            "server",
            "results/s",
            "requests/s",
            "work p50 ms",
            "work p99 ms",
            "upload p50 ms",
            "upload p99 ms",
            "server CPU ms/result",
            "results per server CPU s",
        ],
    )
    for name, r in (("yadml (SQLite)", ours), ("bare aiohttp", base)):
        table.add_row(
            name,
            f"{r['results_per_s']:.0f}",
            f"{r['requests_per_s']:.0f}",
            f"{r['work_p50_ms']:.1f}",
            f"{r['work_p99_ms']:.1f}",
            f"{r['upload_p50_ms']:.1f}",
            f"{r['upload_p99_ms']:.1f}",
            f"{r['server_cpu_ms_per_result']:.2f}",
            f"{r['results_per_server_cpu_s']:.0f}",
        )
    console.print(table)
    console.print(
        f"ratio yadml / bare: {ratio:.2f}; BOINC reference ~100 results/s: "
        f"{ours['results_per_s'] / 100:.1f}x"
    )
    common.write_results(
        args.output,
        {
            "hosts": args.hosts,
            "max_units": args.max_units,
            "units_seeded": args.units,
            "duration_s": args.duration,
            "yadml": ours,
            "bare_aiohttp": base,
            "ratio_to_bare": ratio,
            "server_cpu_per_result_ratio_bare_over_yadml": (
                base["server_cpu_ms_per_result"] / ours["server_cpu_ms_per_result"]
            ),
            "boinc_reference_results_per_s": 100,
            "machine": f"{os.cpu_count()} cores",
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
