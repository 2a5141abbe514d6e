"""Dispatch throughput with 1, 2 and 4 server processes on one PostgreSQL database, next to
one process on SQLite (the embedded default).

The same seeded work (a running job, ``--units`` work units with one unsent result each,
tiny blobs) and the same load: ``--hosts`` simulated hosts in one load-generator process
(``dispatch_throughput.host_loop``: request work -> download inputs -> upload), host ``i``
talking to server ``i mod N``. The servers share one state directory (keys, blobs) and run
with ``--no-daemons``, as in ``bench.dispatch_throughput``. After each run the database must
show every accepted result exactly once (``over/success`` rows == accepted uploads).

    .venv/bin/python -m bench.dispatch_scaling      # needs YADML_TEST_PG_URL or
                                                    # scripts/postgres.sh (make postgres)

Writes ``bench/results/dispatch_scaling.json``. The ratio that matters is each row against
the 1-process PostgreSQL row measured in the same run: on a machine with few cores the
servers, PostgreSQL and the load generator share them, so more processes cannot go faster
than the cores allow.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import common
from bench.dispatch_throughput import OPERATOR, host_loop, seed_rows, tiny_weights
from work_server import launch

RATES = ["--rate-work-ip", "100000/100000", "--rate-work-host", "100000/100000"]
RATES += ["--rate-register", "1000/1000"]


# --------------------------------------------------------------------------- database


async def seed(url: str, blobs_dir: Path, units: int) -> None:
    """Schema by the migrations, then ``dispatch_throughput.seed_rows``."""
    from work_server.db.engine import create_schema, make_engine, make_sessionmaker

    engine = make_engine(url)
    try:
        await create_schema(engine)
        async with make_sessionmaker(engine)() as s:
            for batch in seed_rows(blobs_dir, units):
                s.add_all(batch)
                await s.flush()
            await s.commit()
    finally:
        await engine.dispose()


async def accepted_rows(url: str) -> dict[str, int]:
    from sqlalchemy import func
    from sqlmodel import col, select

    from work_server.db.engine import make_engine, make_sessionmaker
    from work_server.db.models import Result

    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as s:
            rows = (
                await s.exec(select(Result.outcome, func.count()).group_by(col(Result.outcome)))
            ).all()
    finally:
        await engine.dispose()
    return {str(k): int(v) for k, v in rows}


# --------------------------------------------------------------------------- load


async def run_load_multi(
    urls: list[str], tokens: list[str], duration: float, max_units: int
) -> dict[str, Any]:
    """``dispatch_throughput.run_load`` with host ``i`` on ``urls[i % len(urls)]``."""
    upload = tiny_weights(report=True)
    stats: dict[str, list[float]] = {"work": [], "blob": [], "upload": [], "done": []}
    per = max(1, len(tokens) // len(urls) + 1)
    limits = httpx.Limits(max_connections=per, max_keepalive_connections=per)
    clients = [httpx.AsyncClient(base_url=u, limits=limits, timeout=60) for u in urls]
    try:
        start = time.monotonic()
        await asyncio.gather(
            *(
                host_loop(clients[i % len(clients)], t, upload, stats, start + duration, max_units)
                for i, t in enumerate(tokens)
            )
        )
        wall = time.monotonic() - start
    finally:
        for c in clients:
            await c.aclose()

    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")

    done = len(stats["done"])
    return {
        "wall_s": wall,
        "results_accepted": done,
        "results_per_s": done / wall if wall else 0.0,
        "work_p50_ms": pct(stats["work"], 0.5),
        "work_p99_ms": pct(stats["work"], 0.99),
        "upload_p50_ms": pct(stats["upload"], 0.5),
        "upload_p99_ms": pct(stats["upload"], 0.99),
    }


def measure(url: str, n: int, args: argparse.Namespace, tmp: Path, tag: str) -> dict[str, Any]:
    """Seed, start ``n`` servers on ``url``, register hosts, run the generator, check rows."""
    state = tmp / tag / "var"
    state.mkdir(parents=True)
    asyncio.run(seed(url, state / "blobs", args.units))
    env = {**os.environ, "YADML_OPERATOR_TOKEN": OPERATOR}
    ports = [launch.free_port() for _ in range(n)]
    logs = [tmp / tag / f"server{i}.log" for i in range(n)]
    procs = [  # all started at once, as a deployment's replicas would be
        launch.spawn(
            launch.serve_command(
                port=port,
                state_dir=state,
                runs_dir=tmp / tag / "runs",
                extra=["--database-url", url, "--no-daemons", "--log-level", "WARNING", *RATES],
            ),
            log_path=log,
            env=env,
        )
        for port, log in zip(ports, logs, strict=True)
    ]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for u, p, log in zip(urls, procs, logs, strict=True):
            launch.wait_healthy(u, p, log_path=log)
        tokens = [
            httpx.post(f"{urls[i % n]}/api/v1/hosts", json={"name": f"sim{i}", "cpus": 64}).json()[
                "host_token"
            ]
            for i in range(args.hosts)
        ]
        tok = tmp / tag / "tokens.json"
        tok.write_text(json.dumps({"urls": urls, "tokens": tokens}))
        worker = ["--worker", str(tok), "--duration", str(args.duration)]
        out = subprocess.run(
            common.module_command(
                "bench.dispatch_scaling", *worker, "--max-units", str(args.max_units)
            ),
            cwd=common.ROOT,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"load generator failed: {out.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    except Exception:
        for log in logs:
            print(f"--- {log.name} (tail)\n{launch.log_tail(log, 60)}", file=sys.stderr)
        raise
    finally:
        launch.stop_processes(procs)
    rows = asyncio.run(accepted_rows(url))
    result["db_success_rows"] = rows.get("success", 0)
    if result["db_success_rows"] != result["results_accepted"]:
        raise RuntimeError(f"{tag}: accepted {result['results_accepted']} but rows {rows}")
    return result


# --------------------------------------------------------------------------- PostgreSQL


def postgres_url() -> str:
    """The test server's URL: ``YADML_TEST_PG_URL``, else ``scripts/postgres.sh`` (starts it)."""
    url = os.environ.get("YADML_TEST_PG_URL")
    if url:
        return url
    out = subprocess.run(
        [str(common.ROOT / "scripts" / "postgres.sh")], check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


async def _admin(url: str, sql: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


def with_database(admin: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    asyncio.run(_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(_admin(admin, f'CREATE DATABASE "{name}"'))
    return make_url(admin).set(database=name).render_as_string(hide_password=False)


# --------------------------------------------------------------------------- main


def worker_main(args: argparse.Namespace) -> int:
    spec = json.loads(Path(args.worker).read_text())
    out = asyncio.run(run_load_multi(spec["urls"], spec["tokens"], args.duration, args.max_units))
    print(json.dumps(out))
    return 0


def main() -> int:
    p = common.bench_parser(__doc__, results="dispatch_scaling")
    p.add_argument("--units", type=int, default=6000)
    p.add_argument("--hosts", type=int, default=32)
    p.add_argument("--duration", type=float, default=12.0, help="seconds per measurement")
    p.add_argument("--max-units", type=int, default=8, help="units asked for per request")
    p.add_argument("--processes", default="1,2,4", help="PostgreSQL server process counts")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker_main(args)

    console = common.console(min_width=120)
    admin = postgres_url()
    load_start = os.getloadavg()[0]
    counts = [int(n) for n in args.processes.split(",")]
    rows: list[tuple[str, int, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="yadml-scaling-") as tmpname:
        tmp = Path(tmpname)
        console.print(f"SQLite, 1 process: {args.hosts} hosts, {args.units} units ...")
        sqlite = f"sqlite+aiosqlite:///{tmp / 'sqlite.db'}"
        rows.append(("sqlite", 1, measure(sqlite, 1, args, tmp, "sqlite")))
        for n in counts:
            console.print(f"PostgreSQL, {n} process(es) ...")
            url = with_database(admin, f"yadml_bench_{n}")
            try:
                rows.append(("postgresql", n, measure(url, n, args, tmp, f"pg{n}")))
            finally:
                asyncio.run(
                    _admin(admin, f'DROP DATABASE IF EXISTS "yadml_bench_{n}" WITH (FORCE)')
                )

    base = next((r for b, n, r in rows if b == "postgresql" and n == 1), rows[0][2])
    table = common.table(
        f"dispatch throughput by server processes, {args.hosts} simulated hosts",
        [
            "database",
            "processes",
            "results/s",
            "vs PG x1",
            "work p50 ms",
            "work p99 ms",
            "upload p99 ms",
        ],
    )
    for backend, n, r in rows:
        r["ratio_to_postgresql_1"] = r["results_per_s"] / base["results_per_s"]
        table.add_row(
            backend,
            str(n),
            f"{r['results_per_s']:.0f}",
            f"{r['ratio_to_postgresql_1']:.2f}",
            f"{r['work_p50_ms']:.1f}",
            f"{r['work_p99_ms']:.1f}",
            f"{r['upload_p99_ms']:.1f}",
        )
    console.print(table)
    end = os.getloadavg()[0]
    console.print(f"load average (1 min): {load_start:.1f} at start, {end:.1f} at end")
    common.write_results(
        args.output,
        {
            "hosts": args.hosts,
            "max_units": args.max_units,
            "units_seeded": args.units,
            "duration_s": args.duration,
            "runs": [{"database": b, "processes": n, **r} for b, n, r in rows],
            "machine": f"{os.cpu_count()} cores",
            "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
