"""End to end with EXECUTOR docker: a real server, two volunteer clients training every unit
in containers of the worker image (`make image`), on the small digits data set."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.requirements import require
from tests.system.harness import cluster
from tests.system.test_end_to_end import DIGITS_JOB, _check_accounting, _wait_done
from tests.volunteer_client.executors.conftest import _engine_state
from volunteer_client.executor_table import client_id_for
from volunteer_client.executors.docker_container import LABEL_CLIENT
from volunteer_client.executors.worker_image import default_image

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def test_digits_job_in_containers(tmp_path: Path) -> None:
    ok, reason = _engine_state()
    require(ok, reason)
    import docker

    engine = docker.from_env()
    image_id = engine.images.get(default_image()).id
    assert image_id is not None
    job: dict[str, Any] = {**DIGITS_JOB, "rounds": 2, "runtimes": ["docker"]}
    with cluster(tmp_path, 2, server_args=["--worker-image", image_id], runtimes="docker") as (
        server,
        clients,
    ):
        for c in clients:
            c.start("--executor", "docker", "--memory-mb", "1024")
        r = server.api("POST", "/api/v1/jobs", json=job)
        assert r.status_code == 201, r.text
        job_id = int(r.json()["id"])
        done = _wait_done(server, job_id, 360)
        assert done["state"] == "completed", done
        assert done["rounds"][-1]["accuracy"] > 0.6, done["rounds"]
        assert done["rounds"][-1]["results_success"] == 2
        _check_accounting(server, job_id)
        con = sqlite3.connect(server.root / "var" / "yadml.db")
        try:
            rows = con.execute("SELECT runtime FROM result WHERE host_id IS NOT NULL").fetchall()
            runtimes = {row[0] for row in rows}
        finally:
            con.close()
        assert runtimes == {"docker"}
        for c in clients:
            assert c.stop() == 0
    try:
        for c in clients:
            label = f"{LABEL_CLIENT}={client_id_for(c.state_dir)}"
            assert engine.containers.list(all=True, filters={"label": label}) == []
    finally:
        engine.close()
