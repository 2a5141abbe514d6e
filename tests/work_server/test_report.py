from __future__ import annotations

import json
from pathlib import Path

from work_server.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _report(rounds: int = 3) -> dict[str, object]:
    return {
        "job_id": 7,
        "dataset": "digits",
        "model": "lenet",
        "config": {"shards": 4, "merge": {"method": "simple_average"}},
        "rounds": [
            {"round": r, "accuracy": 0.5 + 0.1 * r, "loss": 1.0 / r, "f1_macro": 0.4}
            for r in range(1, rounds + 1)
        ],
        "final": {"accuracy": 0.8, "loss": 0.33},
        "confusion_matrix": [[(i * 7 + j) % 13 for j in range(10)] for i in range(10)],
        "wall_s": 12.5,
    }


def _check_files(run_dir: Path) -> None:
    for name in ("accuracy.png", "confusion.png"):
        data = (run_dir / name).read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 1000
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]


def test_write_report(tmp_path: Path) -> None:
    report = _report()
    run_dir = tmp_path / "runs" / "job-7"
    write_report(run_dir, report)
    assert json.loads((run_dir / "report.json").read_text()) == report
    _check_files(run_dir)
    # Overwriting works (reports are rewritten every round).
    report["wall_s"] = 20.0
    write_report(run_dir, report)
    assert json.loads((run_dir / "report.json").read_text())["wall_s"] == 20.0


def test_write_report_without_rounds_or_matrix(tmp_path: Path) -> None:
    report = _report(0)
    report["confusion_matrix"] = None
    write_report(tmp_path, report)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    _check_files(tmp_path)
