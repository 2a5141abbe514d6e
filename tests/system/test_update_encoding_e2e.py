"""End to end with compressed uploads: real server and client processes, a digits job whose
volunteers upload int8 deltas; the server validates, decodes and merges them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.system.harness import cluster
from tests.system.test_end_to_end import DIGITS_JOB, _check_accounting, _wait_done

pytestmark = pytest.mark.slow

LENET_PARAMETERS = 61_706


def test_int8_job_completes_with_quarter_size_uploads(tmp_path: Path) -> None:
    with cluster(tmp_path, 2) as (server, clients):
        for c in clients:
            c.start()
        r = server.api(
            "POST", "/api/v1/jobs", json={**DIGITS_JOB, "rounds": 2, "update_encoding": "int8"}
        )
        assert r.status_code == 201, r.text
        job_id = int(r.json()["id"])
        job = _wait_done(server, job_id, 300)
        assert job["state"] == "completed", job
        assert job["spec"]["update_encoding"] == "int8"
        assert job["rounds"][-1]["accuracy"] > 0.75, job["rounds"]
        assert job["rounds"][-1]["results_success"] == 2
        _check_accounting(server, job_id)
        con = sqlite3.connect(server.root / "var" / "yadml.db")
        try:
            sizes = [
                size
                for (size,) in con.execute(
                    "SELECT r.output_size FROM result r JOIN workunit w ON w.id = r.workunit_id "
                    "WHERE r.outcome = 'success' AND w.job_id = ?",
                    (job_id,),
                )
            ]
        finally:
            con.close()
        assert len(sizes) == 4
        fp32_bytes = 4 * LENET_PARAMETERS
        assert all(size < 0.3 * fp32_bytes for size in sizes), sizes  # int8 + scales
