"""The attacks' math on small tensors, and the fault/attack injection wrapper."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch

from volunteer_client.errors import ExecutionFailed
from volunteer_client.executors.base import ExecutionRequest, ExecutionResult, Executor
from volunteer_client.testing.attacks import apply_update_attack, flip_labels, garbage_like
from volunteer_client.testing.faults import (
    FLIPPED_SHARD,
    AttackSpec,
    FaultyExecutor,
    draw_fault,
    parse_attack,
    parse_faults,
)
from yadml_common.wire import TaskConfig

W0 = {"w": torch.tensor([1.0, 2.0, 3.0]), "n": torch.tensor([5], dtype=torch.int64)}
W1 = {"w": torch.tensor([1.5, 1.0, 3.0]), "n": torch.tensor([6], dtype=torch.int64)}


def test_signflip_and_scale() -> None:
    out = apply_update_attack("signflip", W0, W1, param=1.0)
    assert torch.equal(out["w"], torch.tensor([0.5, 3.0, 3.0]))  # w0 - d
    out = apply_update_attack("signflip", W0, W1)  # default boost 5
    assert torch.allclose(out["w"], torch.tensor([-1.5, 7.0, 3.0]))
    out = apply_update_attack("scale", W0, W1)
    assert torch.allclose(out["w"], torch.tensor([6.0, -8.0, 3.0]))  # w0 + 10 d
    assert torch.equal(out["n"], W1["n"])  # integer buffers pass through


def test_noise_is_seeded_and_centred_on_the_update() -> None:
    big0 = {"w": torch.zeros(20000)}
    big1 = {"w": torch.full((20000,), 0.5)}
    a = apply_update_attack(
        "noise", big0, big1, param=2.0, generator=torch.Generator().manual_seed(1)
    )
    b = apply_update_attack(
        "noise", big0, big1, param=2.0, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(a["w"], b["w"])
    assert abs(float(a["w"].mean()) - 0.5) < 0.05
    assert abs(float(a["w"].std()) - 2.0) < 0.05


def test_alie_moves_each_coordinate_against_its_sign_by_z_sigma() -> None:
    d = torch.tensor([1.0, -1.0, 3.0, -3.0])
    sigma = float(d.std(unbiased=False))  # sqrt(5)
    out = apply_update_attack("alie", {"w": torch.zeros(4)}, {"w": d}, param=0.5)
    assert torch.allclose(out["w"], d - 0.5 * sigma * torch.sign(d))


def test_flip_labels_and_garbage() -> None:
    assert flip_labels(torch.tensor([0, 1, 9])).tolist() == [9, 8, 0]
    g = garbage_like(W0, torch.Generator().manual_seed(0))
    assert g["w"].shape == (3,)
    assert bool(torch.isfinite(g["w"]).all())
    assert torch.equal(g["n"], W0["n"])
    with pytest.raises(ValueError, match="not an update attack: 'labelflip'"):
        apply_update_attack("labelflip", W0, W1)


def test_parse_faults_and_attack() -> None:
    assert parse_faults("crash:0.3, late:0.1") == {"crash": 0.3, "late": 0.1}
    assert parse_faults("") == {}
    for bad, why in (
        ("crash", "'crash' needs a probability"),
        ("crash:x", "'crash': not a number: 'x'"),
        ("crash:1.5", r"'crash': probability 1\.5 not in \[0, 1\]"),
        ("melt:0.1", "unknown fault 'melt'"),
        ("crash:0.6,late:0.6", r"add up to 1\.2 > 1"),
        ("late:.1,late:.1", "'late' given twice"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_faults(bad)
    assert parse_attack("signflip") == AttackSpec("signflip")
    assert parse_attack("noise:0.5") == AttackSpec("noise", 0.5)
    assert parse_attack("none") is None
    for bad, why in (
        ("evil", "unknown attack 'evil'"),
        ("scale:abc", "'scale': not a number: 'abc'"),
        ("scale:inf", "'scale': parameter must be finite"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_attack(bad)


def test_draw_fault_slices() -> None:
    faults = {"crash": 0.3, "late": 0.1}
    assert draw_fault(faults, 0.0) == "crash"
    assert draw_fault(faults, 0.29) == "crash"
    assert draw_fault(faults, 0.35) == "late"  # crash, vanish (0), late in FAULTS order
    assert draw_fault(faults, 0.4) is None
    assert draw_fault({}, 0.0) is None


# ----------------------------------------------------------------------------- the wrapper


class FakeExecutor(Executor):
    """'Trains' by adding 0.25 to every float weight; records the shard it was given."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.shards: list[Path] = []
        self.cancelled = False

    async def run(self, request: ExecutionRequest) -> ExecutionResult:
        self.shards.append(request.shard_path)
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        w = safetensors.torch.load_file(str(request.weights_path))
        out = {k: v + 0.25 if v.is_floating_point() else v for k, v in w.items()}
        report = json.dumps({"train_loss": 0.1, "samples": 2, "elapsed_s": 0.0, "epochs": 1})
        safetensors.torch.save_file(out, str(request.output_path), metadata={"report": report})
        return ExecutionResult(output_path=request.output_path, elapsed_s=0.0)


def _request(tmp_path: Path, timeout_s: float = 10.0) -> ExecutionRequest:
    weights = tmp_path / "w.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(3)}, str(weights))
    shard = tmp_path / "s.safetensors"
    images = torch.zeros(2, 28, 28, dtype=torch.uint8)
    safetensors.torch.save_file({"images": images, "labels": torch.tensor([0, 3])}, str(shard))
    return ExecutionRequest(
        work_dir=tmp_path,
        shard_path=shard,
        weights_path=weights,
        task=TaskConfig(),
        output_path=tmp_path / "out.safetensors",
        timeout_s=timeout_s,
    )


def _output(req: ExecutionRequest) -> tuple[torch.Tensor, dict[str, str]]:
    with safetensors.safe_open(str(req.output_path), framework="pt") as f:
        meta = f.metadata()
    return safetensors.torch.load_file(str(req.output_path))["w"], meta


async def test_honest_wrapper_changes_nothing(tmp_path: Path) -> None:
    ex = FaultyExecutor(FakeExecutor(), seed=0)
    req = _request(tmp_path)
    await ex.run(req)
    w, meta = _output(req)
    assert torch.equal(w, torch.full((3,), 0.25))
    assert "report" in meta
    assert ex.history == ["ok"]


async def test_update_attack_rewrites_output_keeping_report(tmp_path: Path) -> None:
    ex = FaultyExecutor(FakeExecutor(), attack=AttackSpec("scale", 4.0), seed=0)
    req = _request(tmp_path)
    await ex.run(req)
    w, meta = _output(req)
    assert torch.allclose(w, torch.full((3,), 1.0))
    assert "report" in meta


async def test_labelflip_trains_on_flipped_copy(tmp_path: Path) -> None:
    inner = FakeExecutor()
    ex = FaultyExecutor(inner, attack=AttackSpec("labelflip"), seed=0)
    req = _request(tmp_path)
    await ex.run(req)
    assert inner.shards == [tmp_path / FLIPPED_SHARD]
    labels = safetensors.torch.load_file(str(tmp_path / FLIPPED_SHARD))["labels"]
    assert labels.tolist() == [9, 6]
    original = safetensors.torch.load_file(str(req.shard_path))["labels"]
    assert original.tolist() == [0, 3]


async def test_crash_kills_the_run_and_reports_crash(tmp_path: Path) -> None:
    inner = FakeExecutor(delay_s=30.0)
    ex = FaultyExecutor(inner, faults={"crash": 1.0}, seed=0, crash_window_s=0.05)
    with pytest.raises(ExecutionFailed) as info:
        await ex.run(_request(tmp_path))
    assert info.value.reason == "crash"
    assert inner.cancelled


async def test_late_waits_past_the_deadline_then_returns(tmp_path: Path) -> None:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    ex = FaultyExecutor(
        FakeExecutor(),
        faults={"late": 1.0},
        seed=0,
        late_extra_s=2.0,
        sleep=sleep,
        clock=lambda: 0.0,
    )
    await ex.run(_request(tmp_path, timeout_s=10.0))
    assert slept == [12.0]  # the 10 s to the deadline + 2 s


async def test_vanish_never_reports_before_the_deadline(tmp_path: Path) -> None:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    inner = FakeExecutor()
    ex = FaultyExecutor(inner, faults={"vanish": 1.0}, seed=0, late_extra_s=1.0, sleep=sleep)
    with pytest.raises(ExecutionFailed):
        await ex.run(_request(tmp_path, timeout_s=5.0))
    assert slept == [6.0]
    assert inner.shards == []


async def test_garbage_output_is_finite_and_shaped(tmp_path: Path) -> None:
    ex = FaultyExecutor(FakeExecutor(), faults={"garbage": 1.0}, seed=0)
    req = _request(tmp_path)
    await ex.run(req)
    w, meta = _output(req)
    assert w.shape == (3,)
    assert bool(torch.isfinite(w).all())
    assert "report" in meta
    assert not torch.equal(w, torch.full((3,), 0.25))
