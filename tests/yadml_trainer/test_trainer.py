from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.numpy
import safetensors.torch
import torch

from work_server.ml.datasets import load_dataset
from yadml_common.wire import REPORT_METADATA_KEY, TaskConfig, TrainReport
from yadml_trainer import trainer
from yadml_trainer.exit_status import InvalidInput
from yadml_trainer.models import initial_state
from yadml_trainer.trainer import main, train
from yadml_trainer.training import train_state

REPO_ROOT = Path(__file__).resolve().parents[2]
TASK = TaskConfig(dataset="digits", local_epochs=2, batch_size=32, seed=11)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shard() -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset("digits")
    return ds.train_images[:200].copy(), ds.train_labels[:200].copy()


@pytest.fixture
def inputs(tmp_path: Path, shard: tuple[np.ndarray, np.ndarray]) -> dict[str, Path]:
    images, labels = shard
    paths = {
        "shard": tmp_path / "shard.safetensors",
        "weights": tmp_path / "weights.safetensors",
        "task": tmp_path / "task.json",
    }
    safetensors.numpy.save_file({"images": images, "labels": labels}, str(paths["shard"]))
    safetensors.torch.save_file(initial_state("lenet", 0), str(paths["weights"]))
    paths["task"].write_text(TASK.model_dump_json())
    return paths


def _train(inputs: dict[str, Path], out: Path, progress: Path | None = None) -> TrainReport:
    return train(
        shard_path=inputs["shard"],
        weights_path=inputs["weights"],
        task=TASK,
        output_path=out,
        threads=1,
        progress_path=progress,
    )


def test_train_output_matches_input_and_report(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    progress = tmp_path / "progress"
    report = _train(inputs, out, progress)
    assert report.samples == 200
    assert report.epochs == 2
    assert report.train_loss > 0
    before = safetensors.torch.load_file(str(inputs["weights"]))
    after = safetensors.torch.load_file(str(out))
    assert after.keys() == before.keys()
    for name, t in before.items():
        assert after[name].shape == t.shape
        assert after[name].dtype == t.dtype
    assert not torch.equal(after["fc2.weight"], before["fc2.weight"])
    with safetensors.safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    parsed = TrainReport.model_validate_json(meta[REPORT_METADATA_KEY])
    assert parsed == report
    assert float(progress.read_text()) == 1.0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_training_reduces_loss(shard: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = (torch.from_numpy(a) for a in shard)
    task = TaskConfig(local_epochs=1, batch_size=16, seed=0)
    weights = initial_state("lenet", 0)
    losses = []
    for _ in range(3):
        weights, report = train_state(weights, images, labels, task)
        losses.append(report.train_loss)
    assert losses[-1] < losses[0]


def test_deterministic_bit_identical(inputs: dict[str, Path], tmp_path: Path) -> None:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    _train(inputs, a)
    _train(inputs, b)
    ta = safetensors.torch.load_file(str(a))
    tb = safetensors.torch.load_file(str(b))
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_global_state_restored(shard: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = (torch.from_numpy(a) for a in shard)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_state(initial_state("lenet", 0), images[:20], labels[:20], TASK, threads=1)
    assert torch.equal(torch.rand(3), expected)
    assert not torch.are_deterministic_algorithms_enabled()


def test_sgd_and_seed_matter(shard: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = (torch.from_numpy(a[:64]) for a in shard)
    w = initial_state("lenet", 0)
    sgd = TaskConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4, seed=1)
    s1, _ = train_state(w, images, labels, sgd)
    s2, _ = train_state(w, images, labels, sgd.model_copy(update={"seed": 2}))
    assert not torch.equal(s1["conv1.weight"], s2["conv1.weight"])


def test_in_memory_validation(shard: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = (torch.from_numpy(a) for a in shard)
    w = initial_state("lenet", 0)
    with pytest.raises(InvalidInput, match=r"0\.\.9"):
        train_state(w, images, labels + 5, TASK)
    with pytest.raises(InvalidInput, match="missing"):
        train_state({k: v for k, v in w.items() if k != "fc2.bias"}, images, labels, TASK)
    bad = dict(w, **{"fc2.bias": torch.full((10,), float("nan"))})
    with pytest.raises(InvalidInput, match="non-finite"):
        train_state(bad, images, labels, TASK)
    with pytest.raises(InvalidInput, match="uint8"):
        train_state(w, images.float(), labels, TASK)


def _argv(paths: dict[str, Path], out: Path) -> list[str]:
    return [
        "--shard", str(paths["shard"]), "--weights", str(paths["weights"]),
        "--task", str(paths["task"]), "--output", str(out), "--threads", "1",
    ]  # fmt: skip


def _cli(inputs: dict[str, Path], out: Path, **override: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "yadml_trainer.trainer", *_argv({**inputs, **override}, out)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)


def test_main_in_process_ok(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o.safetensors"
    assert main(_argv(inputs, out)) == 0
    TrainReport.model_validate_json(capsys.readouterr().out)
    assert out.is_file()


def _invalid_cases(inputs: dict[str, Path], tmp_path: Path) -> dict[str, dict[str, Path]]:
    bad_task = tmp_path / "bad_task.json"
    bad_task.write_text(json.dumps({"lr": -1}))
    unknown_model = tmp_path / "model_task.json"
    unknown_model.write_text(json.dumps({"model": "resnet"}))
    not_json = tmp_path / "not_json.json"
    not_json.write_text("{")
    wrong_shape = tmp_path / "wrong_shape.safetensors"
    w = initial_state("lenet", 0)
    w["fc1.weight"] = torch.zeros(84, 121)
    safetensors.torch.save_file(w, str(wrong_shape))
    extra_key = tmp_path / "extra_key.safetensors"
    safetensors.torch.save_file({**initial_state("lenet", 0), "x": torch.zeros(1)}, str(extra_key))
    bad_labels = tmp_path / "bad_labels.safetensors"
    safetensors.numpy.save_file(
        {"images": np.zeros((3, 28, 28), np.uint8), "labels": np.array([0, 1, 10])}, str(bad_labels)
    )
    bad_dtype = tmp_path / "bad_dtype.safetensors"
    safetensors.numpy.save_file(
        {"images": np.zeros((3, 28, 28), np.float32), "labels": np.zeros(3, np.int64)},
        str(bad_dtype),
    )
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not safetensors at all")
    return {
        "bad_task": {"task": bad_task},
        "unknown_model": {"task": unknown_model},
        "not_json": {"task": not_json},
        "missing_task": {"task": tmp_path / "missing.json"},
        "wrong_shape": {"weights": wrong_shape},
        "extra_key": {"weights": extra_key},
        "garbage_weights": {"weights": garbage},
        "bad_labels": {"shard": bad_labels},
        "bad_dtype": {"shard": bad_dtype},
        "missing_shard": {"shard": tmp_path / "missing.safetensors"},
        "weights_as_shard": {"shard": inputs["weights"]},
    }


def test_main_invalid_inputs_exit_2(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.safetensors"
    for name, override in _invalid_cases(inputs, tmp_path).items():
        assert main(_argv({**inputs, **override}, out)) == 2, name
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, (name, lines)
        assert lines[0].startswith("trainer: invalid input:"), (name, lines)
        assert not out.exists()


@pytest.mark.parametrize("case", ["bad_task", "bad_labels"])
def test_cli_invalid_inputs_exit_2(inputs: dict[str, Path], tmp_path: Path, case: str) -> None:
    """The real ``python -m yadml_trainer.trainer`` entry point, in a subprocess."""
    out = tmp_path / "out.safetensors"
    proc = _cli(inputs, out, **_invalid_cases(inputs, tmp_path)[case])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("trainer: invalid input:"), proc.stderr
    assert not out.exists()


def test_main_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--shard", "x"])
    assert info.value.code == 2
    assert "invalid arguments" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--shard", "s", "--weights", "w", "--task", "t", "--output", "o", "--threads", "0"])
    assert info.value.code == 2


def test_main_other_error_exit_1(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The output path is a directory: the final rename fails after training (the output's
    # parent folder is created when missing, so a missing folder is no longer an error).
    blocked = tmp_path / "out.safetensors"
    blocked.mkdir()
    assert main(_argv(inputs, blocked)) == 1
    err = capsys.readouterr().err
    assert err.startswith("trainer: error:")
    assert len(err.strip().splitlines()) == 1


def test_module_only_imports_allowed_packages() -> None:
    code = (
        "import sys, yadml_trainer.trainer; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'work_server', 'sklearn'}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=True,
    )
    assert proc.stdout.strip() == "[]"
    assert trainer.__doc__
    assert "Determinism" in trainer.__doc__
