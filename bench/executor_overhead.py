"""Per-unit overhead of the executors: process, Docker (one container per unit), Docker warm.

Each executor trains the same one-epoch MNIST shard (``--samples`` images, LeNet, Adam, batch
64, 1 thread: a demo volunteer's unit) ``--units`` times in a row. For every unit:

* ``train``: the trainer's own time (``TrainReport.elapsed_s``: read the inputs, train,
  write the output);
* ``start``: from ``executor.run()`` to the trainer being ready (interpreter, ``import
  torch``, and for Docker creating and starting the container) = time until the output file
  was written minus ``train``;
* ``teardown``: from the output file being written to ``run()`` returning (process exit or
  container exit, logs, removal);
* ``fixed`` = ``start + teardown`` and its share of the unit's wall time.

The executors take turns (process, docker, docker warm, process, ...) so that other load on
the machine hits them alike; the table shows medians per column and the least fixed cost.

Also measured: a bare ``docker run --rm <image> true`` (the engine's own cost), and the worker
image's size installed and compressed (``docker save | gzip``), next to the 0.5 GB image the
project's origin measured.

The VM row (``vm`` executor, QEMU driver; KVM where it works, else TCG) trains a smaller
shard (``--vm-samples``: under TCG every instruction is emulated) and reports the
boot-to-trainer-ready time (from ``run()`` to the guest's init starting the trainer: overlay,
QEMU, firmware, kernel, inputs unpacked), the rest of the fixed cost (``import torch`` in
the guest, power-off, reading the output disk), and the image's size to download (the
qcow2, gzip-compressed) and on disk (qcow2 and VDI), against the origin's VirtualBox route
(about 5 GB to download, 135 s to start a VM) and the Docker row.

    .venv/bin/python -m bench.executor_overhead [--samples 15000] [--units 3]
                                                [--vm-samples 600] [--vm-units 1] [--no-vm]

Prints a table and writes ``bench/results/executor_overhead.json``. Needs a Docker engine and
the worker image (``make image``), and for the VM row QEMU and the VM image (``make vm-image``).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from rich.table import Table

from bench import common
from volunteer_client.executors import (
    DockerExecutor,
    DockerOptions,
    ProcessExecutor,
    ProcessOptions,
    VmOptions,
)
from volunteer_client.executors.base import ExecutionRequest, Executor
from volunteer_client.executors.worker_image import default_image
from work_server.ml.datasets import load_dataset
from yadml_common.wire import REPORT_METADATA_KEY, SHARD_IMAGES, SHARD_LABELS, TaskConfig
from yadml_trainer.models import build_model

REFERENCE_IMAGE_GB = 0.5  # the origin's Docker image (and 62 s average start)
REFERENCE_VM_GB = 5.0  # the origin's VirtualBox route: about 5 GB to download...
REFERENCE_VM_START_S = 135.0  # ...and 135 s to start a VM


def make_inputs(root: Path, samples: int) -> tuple[Path, Path]:
    data = load_dataset("mnist")
    shard = root / "shard.safetensors"
    safetensors.torch.save_file(
        {
            SHARD_IMAGES: torch.from_numpy(data.train_images[:samples].copy()),
            SHARD_LABELS: torch.from_numpy(data.train_labels[:samples].copy()),
        },
        str(shard),
    )
    torch.manual_seed(0)
    weights = root / "weights.safetensors"
    model = build_model("lenet")
    safetensors.torch.save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(weights)
    )
    return shard, weights


async def run_unit(
    executor: Executor, root: Path, shard: Path, weights: Path, label: str
) -> dict[str, float]:
    work = root / label
    (work / "inputs").mkdir(parents=True)
    s, w = work / "inputs" / "shard", work / "inputs" / "weights"
    os.link(shard, s)
    os.link(weights, w)
    request = ExecutionRequest(
        work_dir=work,
        shard_path=s,
        weights_path=w,
        task=TaskConfig(model="lenet", seed=1, batch_size=64),
        output_path=work / "output.safetensors",
        timeout_s=1800,
        threads=1,
        progress_path=work / "progress",
    )
    t0 = time.time()
    await executor.run(request)
    t_end = time.time()
    t_out = request.output_path.stat().st_mtime
    with safetensors.safe_open(str(request.output_path), "pt") as f:
        report = json.loads((f.metadata() or {})[REPORT_METADATA_KEY])
    train = float(report["elapsed_s"])
    wall = t_end - t0
    start = (t_out - t0) - train
    teardown = t_end - t_out
    shutil.rmtree(work)
    return {
        "wall_s": wall,
        "train_s": train,
        "start_s": start,
        "teardown_s": teardown,
        "fixed_s": wall - train,
        "fixed_share": (wall - train) / wall,
    }


def bare_container_s(image: str, runs: int = 3) -> float:
    import docker

    client = docker.from_env()
    times = []
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            client.containers.run(image, ["true"], remove=True, network_mode="none")
            times.append(time.perf_counter() - t0)
    finally:
        client.close()
    return statistics.median(times)


def image_sizes(image: str) -> dict[str, float]:
    import docker

    client = docker.from_env()
    try:
        img = client.images.get(image)
        installed = int(img.attrs["Size"])
        compressed = 0
        with tempfile.TemporaryFile() as raw:
            for chunk in img.save(named=True):
                raw.write(chunk)
            raw.seek(0)
            comp = gzip.compress(raw.read(), compresslevel=6)
            compressed = len(comp)
        layers = len(img.attrs.get("RootFS", {}).get("Layers", []))
    finally:
        client.close()
    return {
        "installed_mb": installed / 1e6,
        "compressed_mb": compressed / 1e6,
        "layers": layers,
        "reference_mb": REFERENCE_IMAGE_GB * 1000,
    }


def vm_bench(samples: int, units: int) -> dict[str, Any] | None:
    """The VM row: ``units`` units of ``samples`` MNIST images in fresh QEMU VMs."""
    from volunteer_client.errors import ExecutionFailed
    from volunteer_client.executors.vm import QemuDriver, VmExecutor, VmImageStore

    driver = QemuDriver(prefix="yadml-vm-bench-")
    ok, why = driver.usable()
    try:
        image = VmImageStore().find(None, "qcow2")
    except ExecutionFailed as exc:
        ok, why = False, exc.detail
    if not ok:
        print(f"VM row skipped: {why}", file=sys.stderr)
        return None
    rows = []
    with tempfile.TemporaryDirectory(prefix="yadml-bench-vm-") as tmp:
        root = Path(tmp)
        shard, weights = make_inputs(root, samples)
        executor = VmExecutor(VmOptions(client_id="bench", spool_dir=root / "spool"), driver=driver)
        for i in range(units):
            row = asyncio.run(run_unit(executor, root, shard, weights, f"vm-{i}"))
            row["ready_s"] = executor.last_timings["ready_s"]
            row["after_ready_s"] = row["fixed_s"] - row["ready_s"]
            rows.append(row)
    files = image.manifest["files"]
    with open(image.path, "rb") as f:
        download = len(gzip.compress(f.read(), compresslevel=6))
    return {
        "accel": driver.accel,
        "image": image.id,
        "samples": samples,
        "runs": rows,
        "summary_median": {k: statistics.median(r[k] for r in rows) for k in rows[0]},
        "sizes_mb": {
            "download_qcow2_gzip": download / 1e6,
            "qcow2": files["qcow2"]["bytes"] / 1e6,
            "vdi": files["vdi"]["bytes"] / 1e6,
            "root_squashfs": image.manifest["root_squashfs_bytes"] / 1e6,
        },
        "reference": {"download_gb": REFERENCE_VM_GB, "start_s": REFERENCE_VM_START_S},
    }


def vm_table(vm: dict[str, Any], docker: dict[str, float] | None, sizes: Any) -> Table:
    """The VM row next to the Docker row (cold) and the origin's VirtualBox figures."""
    s, mb = vm["summary_median"], vm["sizes_mb"]
    table = common.table(
        f"VM route ({vm['accel'].upper()}), one epoch of {vm['samples']} samples",
        ["route", "boot to trainer s", "fixed s", "train s", "download MB", "on disk MB"],
    )
    table.add_row(
        f"vm (qemu, {vm['accel']})",
        f"{s['ready_s']:.1f}",
        f"{s['fixed_s']:.1f}",
        f"{s['train_s']:.1f}",
        f"{mb['download_qcow2_gzip']:.0f}",
        f"{mb['qcow2']:.0f} qcow2 / {mb['vdi']:.0f} VDI",
    )
    if docker is not None:
        table.add_row(
            "docker (cold)",
            f"{docker['start_s']:.2f} (incl. import)",
            f"{docker['fixed_s']:.2f}",
            f"{docker['train_s']:.2f}",
            f"{sizes['compressed_mb']:.0f}" if sizes else "-",
            f"{sizes['installed_mb']:.0f}" if sizes else "-",
        )
    table.add_row(
        "origin: VirtualBox", f"{REFERENCE_VM_START_S:.0f}", "-", "-",
        f"{REFERENCE_VM_GB * 1000:.0f}", "-",
    )  # fmt: skip
    table.caption = (
        "boot to trainer: run() to the guest starting the trainer (before import torch); "
        "fixed: wall minus training (for the VM: boot, import torch emulated, power-off, "
        "output disk); the docker row trains its own, larger shard"
    )
    return table


def summarize(rows: list[dict[str, float]]) -> dict[str, float]:
    """Medians per column, the least fixed cost, and the median fixed cost's share."""
    out = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    out["fixed_min_s"] = min(r["fixed_s"] for r in rows)
    out["fixed_share"] = out["fixed_s"] / out["wall_s"]
    return out


async def bench(samples: int, units: int, image: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="yadml-bench-") as tmp:
        root = Path(tmp)
        shard, weights = make_inputs(root, samples)
        process = ProcessExecutor()
        # the default of `yadml-client run`: one long-lived trainer process per client
        process_warm = ProcessExecutor(ProcessOptions(warm=True, spool_dir=root / "pspool"))
        cold = DockerExecutor(DockerOptions(image=image, client_id="bench-cold"))
        warm = DockerExecutor(
            DockerOptions(image=image, client_id="bench-warm", warm=True, spool_dir=root / "spool")
        )
        names = ("process", "process_warm_first", "process_warm")
        for name in (*names, "docker", "docker_warm_first", "docker_warm"):
            results[name] = []
        try:
            results["process_warm_first"].append(
                await run_unit(process_warm, root, shard, weights, "pwarm-first")
            )
            # the first warm unit also starts the container; the others find it running
            results["docker_warm_first"].append(
                await run_unit(warm, root, shard, weights, "warm-first")
            )
            # interleaved, so that other load on the machine hits every executor alike
            for i in range(units):
                for name, executor in (
                    ("process", process),
                    ("process_warm", process_warm),
                    ("docker", cold),
                    ("docker_warm", warm),
                ):
                    results[name].append(
                        await run_unit(executor, root, shard, weights, f"{name}-{i}")
                    )
        finally:
            await warm.aclose()
            await process_warm.aclose()
    return results


def main(argv: list[str] | None = None) -> int:
    p = common.bench_parser(__doc__, results="executor_overhead")
    p.add_argument("--samples", type=int, default=15000, help="shard size (MNIST/4 volunteers)")
    p.add_argument("--units", type=int, default=3, help="units per executor")
    p.add_argument("--image", default=None, help="worker image (default: this trainer's)")
    p.add_argument("--no-sizes", action="store_true", help="skip the image size measurement")
    p.add_argument("--vm-samples", type=int, default=600, help="the VM row's shard size")
    p.add_argument("--vm-units", type=int, default=1, help="units in fresh VMs")
    p.add_argument("--no-vm", action="store_true", help="skip the VM row")
    args = p.parse_args(argv)
    image = args.image or default_image()
    console = common.console(min_width=110)
    load_before = os.getloadavg()[0]
    runs = asyncio.run(bench(args.samples, args.units, image))
    bare = bare_container_s(image)
    sizes = None if args.no_sizes else image_sizes(image)
    vm = None if args.no_vm else vm_bench(args.vm_samples, args.vm_units)

    table = common.table(
        f"per-unit cost, one epoch of {args.samples} MNIST samples, 1 thread",
        [
            "executor", "start s", "teardown s", "fixed s", "fixed min s", "train s", "wall s",
            "fixed share",
        ],
    )  # fmt: skip
    summary = {}
    for name, rows in runs.items():
        s = summarize(rows)
        summary[name] = s
        table.add_row(
            name,
            f"{s['start_s']:.2f}",
            f"{s['teardown_s']:.2f}",
            f"{s['fixed_s']:.2f}",
            f"{s['fixed_min_s']:.2f}",
            f"{s['train_s']:.2f}",
            f"{s['wall_s']:.2f}",
            f"{100 * s['fixed_share']:.1f}%",
        )
    console.print(table)
    console.print(f"bare `docker run --rm {image} true`: {bare:.2f} s (median of 3)")
    if sizes:
        console.print(
            f"image {image}: {sizes['installed_mb']:.0f} MB installed, "
            f"{sizes['compressed_mb']:.0f} MB compressed (docker save | gzip), "
            f"reference {sizes['reference_mb']:.0f} MB"
        )
    if vm is not None:
        console.print(vm_table(vm, summary.get("docker"), sizes))
    out = {
        "image": image,
        "samples": args.samples,
        "units": args.units,
        "threads": 1,
        "summary_median": summary,
        "runs": runs,
        "bare_container_s": bare,
        "image_sizes": sizes,
        "vm": vm,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_1min_before": load_before,
            "loadavg_1min_after": os.getloadavg()[0],
        },
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    common.write_results(args.output, out, out=console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
