"""Upload throughput (data plane): MB/s of valid results accepted by the real server.

A real server process (``--no-daemons``, SQLite) with two seeded jobs whose models hold
~1 MB and ~8 MB of float32 parameters; a client in a separate process claims every unit
(not timed), then PUTs one valid safetensors result per unit (the real upload path: grant,
ownership, bounded read, header/shape/dtype/finiteness validation, hashing, blob store
write with fsync, database update), ``--concurrency`` uploads at a time. Every body is
distinct (one parameter differs), so the content-addressed store writes each one.
The same client then PUTs the same bodies to a bare aiohttp handler that reads and discards
them: the HTTP stack's limit on this machine. The figure is the ratio.

    .venv/bin/python -m bench.upload_throughput [--uploads-1mb 200 --uploads-8mb 40]

Writes ``bench/results/upload_throughput.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import common
from bench.dispatch_throughput import _create, start_bare_server, start_server
from work_server import launch

#: (label, float32 parameters of the seeded model): 1 MiB and 8 MiB of weights
SIZES = (("1 MB", 1 << 18), ("8 MB", 1 << 21))


def model_tensors(params: int) -> dict[str, Any]:
    import numpy as np

    cols = 1024
    return {
        "fc.weight": np.zeros((params // cols - 1, cols), np.float32),
        "fc.bias": np.zeros(cols, np.float32),
    }


def weights_blob(params: int, *, report: bool, variant: int = 0) -> bytes:
    from safetensors.numpy import save

    tensors = model_tensors(params)
    tensors["fc.bias"][0] = float(variant)  # distinct bytes per upload
    meta = None
    if report:
        meta = {"report": json.dumps({"train_loss": 0.1, "samples": 10, "elapsed_s": 0.01})}
    return bytes(save(tensors, metadata=meta))


def seed_database(state_dir: Path, units: dict[int, int]) -> None:
    """One running job per model size (``params -> units``), one unsent result per unit."""
    import numpy as np
    from sqlmodel import Session, create_engine

    from work_server.blobs import BlobStore
    from work_server.db.engine import create_schema, make_engine
    from work_server.db.models import Blob, Job, Result, Round, WorkUnit
    from work_server.ml.shards import encode_shard

    asyncio.run(
        _create(make_engine(f"sqlite+aiosqlite:///{state_dir / 'yadml.db'}"), create_schema)
    )
    blobs = BlobStore(state_dir / "blobs")
    shard = encode_shard(np.zeros((8, 28, 28), np.uint8), np.arange(8, dtype=np.int64) % 10)
    shard_sha = blobs.put(shard)
    now = time.time()
    sync = create_engine(f"sqlite:///{state_dir / 'yadml.db'}")
    with Session(sync) as session:
        session.add(Blob(sha256=shard_sha, size=len(shard), kind="shard", created_at=now))
        wu_id = 0
        for job_id, (params, n) in enumerate(units.items(), start=1):
            weights = weights_blob(params, report=False)
            weights_sha = blobs.put(weights)
            session.add(Blob(sha256=weights_sha, size=len(weights), kind="weights", created_at=now))
            session.add(
                Job(
                    id=job_id,
                    state="running",
                    spec={"dataset": "digits"},
                    current_round=1,
                    created_at=now,
                    started_at=now,
                )
            )
            session.add(
                Round(
                    id=job_id,
                    job_id=job_id,
                    number=1,
                    weights_sha256=weights_sha,
                    started_at=now,
                    deadline=now + 86400,
                )
            )
            for i in range(n):
                wu_id += 1
                session.add(
                    WorkUnit(
                        id=wu_id,
                        job_id=job_id,
                        round_id=job_id,
                        shard_index=i,
                        shard_sha256=shard_sha,
                        weights_sha256=weights_sha,
                        num_samples=8,
                        task={"model": "lenet"},
                        runtimes=["process"],
                        delay_bound_s=3600,
                        max_output_bytes=len(weights) + 65536,
                        created_at=now,
                    )
                )
                session.add(Result(workunit_id=wu_id, created_at=now))
        session.commit()
    sync.dispose()


# --------------------------------------------------------------------------- client process


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


async def _upload_batch(
    client: httpx.AsyncClient,
    jobs: list[tuple[tuple[str, str], bytes]],
    headers: dict[str, str],
    conc: int,
    latencies: list[float],
) -> float:
    """PUT every ((url, upload grant), body), ``conc`` at a time; returns the wall time."""
    queue = list(reversed(jobs))

    async def worker() -> None:
        while queue:
            (url, grant), body = queue.pop()
            t0 = time.perf_counter()
            r = await client.put(url, content=body, headers={**headers, "X-Upload-Grant": grant})
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise RuntimeError(f"upload refused: {r.status_code} {r.text[:300]}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return time.perf_counter() - start


async def _measure(
    args: argparse.Namespace,
    urls: list[tuple[str, str]],
    bodies: list[bytes],
    headers: dict[str, str],
) -> dict[str, dict[str, Any]]:
    """Alternate between the two servers, ``args.rounds`` slices each, so a change in the
    machine's background load hits both alike. MB/s = all bytes / all wall time."""
    limits = httpx.Limits(max_connections=args.concurrency)
    clients = {
        "yadml": httpx.AsyncClient(base_url=args.url, timeout=120, limits=limits),
        "bare": httpx.AsyncClient(base_url=args.bare_url, timeout=120, limits=limits),
    }
    walls = dict.fromkeys(clients, 0.0)
    lat: dict[str, list[float]] = {name: [] for name in clients}
    step = -(-len(bodies) // args.rounds)
    try:
        for c in clients.values():
            (await c.get("/healthz")).raise_for_status()  # connect first
        for i in range(0, len(bodies), step):
            for name, c in clients.items():
                n = len(bodies[i : i + step])
                targets = urls[i : i + step] if name == "yadml" else [("/up", "g.mac")] * n
                jobs = list(zip(targets, bodies[i : i + step], strict=True))
                walls[name] += await _upload_batch(c, jobs, headers, args.concurrency, lat[name])
    finally:
        for c in clients.values():
            await c.aclose()
    total = sum(len(b) for b in bodies)
    return {
        name: {
            "uploads": len(bodies),
            "bytes": total,
            "wall_s": walls[name],
            "mb_per_s": total / walls[name] / 1e6,
            "p50_ms": _pct(lat[name], 0.5),
            "p99_ms": _pct(lat[name], 0.99),
        }
        for name in clients
    }


async def client_main(args: argparse.Namespace) -> dict[str, Any]:
    token: str = args.token
    headers = {"Authorization": f"Bearer {token}"}
    #: per size, each unit's (upload.url, upload.grant)
    plans: dict[str, list[tuple[str, str]]] = {label: [] for label, _ in SIZES}
    by_sha: dict[str, str] = {}
    for label, params in SIZES:
        by_sha[hashlib.sha256(weights_blob(params, report=False)).hexdigest()] = label
    async with httpx.AsyncClient(base_url=args.url, timeout=120) as client:
        while True:  # claim every unit (control plane, not timed)
            r = await client.post("/api/v1/work", json={"max_units": 16}, headers=headers)
            r.raise_for_status()
            units = r.json()["units"]
            if not units:
                break
            for u in units:
                sha = next(i["sha256"] for i in u["inputs"] if i["name"] == "weights")
                plans[by_sha[sha]].append((u["upload"]["url"], u["upload"]["grant"]))
    out: dict[str, Any] = {}
    for label, params in SIZES:
        bodies = _bodies(params, len(plans[label]))
        for name, res in (await _measure(args, plans[label], bodies, headers)).items():
            out[f"{name} {label}"] = res
    return out


def _bodies(params: int, n: int) -> list[bytes]:
    base = bytearray(weights_blob(params, report=True))
    # the first element of the last tensor in the data section differs per upload
    header_len = struct.unpack("<Q", base[:8])[0]
    header = json.loads(base[8 : 8 + header_len])
    offset = 8 + header_len + header["fc.bias"]["data_offsets"][0]
    out = []
    for i in range(n):
        base[offset : offset + 4] = struct.pack("<f", float(i + 1))
        out.append(bytes(base))
    return out


# --------------------------------------------------------------------------- bare baseline

BARE_SERVER = r"""
import sys
from aiohttp import web
async def up(request):
    async for _ in request.content.iter_chunked(1 << 16):
        pass
    return web.json_response({"result_id": 1})
async def ok(request):
    return web.Response(text="ok")
app = web.Application(client_max_size=1 << 30)
app.add_routes([web.put("/up", up), web.get("/healthz", ok)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def main() -> int:
    p = common.bench_parser(__doc__, results="upload_throughput")
    p.add_argument("--uploads-1mb", type=int, default=200)
    p.add_argument("--uploads-8mb", type=int, default=40)
    p.add_argument("--concurrency", type=int, default=4, help="uploads in flight")
    p.add_argument("--rounds", type=int, default=4, help="alternations yadml/bare per size")
    p.add_argument("--profile", type=Path, default=None, help="run the server under cProfile")
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--bare-url", help=argparse.SUPPRESS)
    p.add_argument("--token", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        print(json.dumps(asyncio.run(client_main(args))))
        return 0

    console = common.console()
    counts = dict(zip((s for _, s in SIZES), (args.uploads_1mb, args.uploads_8mb), strict=True))
    with tempfile.TemporaryDirectory(prefix="yadml-bench-") as tmpname:
        tmp = Path(tmpname)
        state = tmp / "var"
        state.mkdir()
        seed_database(state, counts)
        port, bport = launch.free_port(), launch.free_port()
        url, burl = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{bport}"
        server = start_server(state, tmp, port, profile=args.profile)
        try:
            bare = start_bare_server(BARE_SERVER, tmp, bport, health="/healthz")
        except BaseException:
            launch.stop_process(server)
            raise
        try:
            token = httpx.post(f"{url}/api/v1/hosts", json={"name": "uploader", "cpus": 64}).json()[
                "host_token"
            ]
            console.print(f"uploading {counts} results (params -> count) ...")
            done = subprocess.run(
                common.module_command(
                    "bench.upload_throughput",
                    *("--client", "--url", url, "--bare-url", burl),
                    *("--token", token, "--concurrency", str(args.concurrency)),
                    *("--rounds", str(args.rounds)),
                ),
                cwd=common.ROOT,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise RuntimeError(f"client failed:\n{done.stderr[-3000:]}")
            out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        finally:
            launch.stop_processes([server, bare], timeout_s=60)

    table = common.table(
        f"upload throughput, {args.concurrency} uploads in flight",
        ["result", "server", "uploads", "MB/s", "p50 ms", "p99 ms", "ratio"],
    )
    ratios: dict[str, float] = {}
    for label, _ in SIZES:
        ours, base = out[f"yadml {label}"], out[f"bare {label}"]
        ratios[label] = ours["mb_per_s"] / base["mb_per_s"]
        for name, r in (("yadml", ours), ("bare aiohttp", base)):
            table.add_row(
                label,
                name,
                str(r["uploads"]),
                f"{r['mb_per_s']:.0f}",
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                f"{ratios[label]:.2f}" if name == "yadml" else "1.00",
            )
    console.print(table)
    console.print("target: yadml >= 0.50 x bare, with validation on")
    common.write_results(
        args.output,
        {
            "concurrency": args.concurrency,
            "results": out,
            "ratio_to_bare": ratios,
            "target_ratio": 0.5,
            "machine": f"{os.cpu_count()} cores",
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
