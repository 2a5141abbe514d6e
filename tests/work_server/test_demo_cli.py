"""The demo's option parsing, the JobSpec it submits and the commands it runs (no processes)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from work_server import demo
from work_server.config import DEFAULT_RUNS_DIR, ServerConfig
from work_server.job_spec import JobSpec
from work_server.launch import free_port


def test_defaults_build_the_documented_job() -> None:
    opts = demo.parse_args([])
    assert opts == demo.DemoOptions()
    assert opts.dataset == "mnist"
    assert opts.volunteers == 4
    assert opts.rounds == 5
    assert opts.executor == "process"
    assert opts.port == 8080
    assert opts.state_dir == Path("var/demo")
    assert opts.runs_dir == Path("runs")

    spec = demo.build_job_spec(opts)
    assert isinstance(spec, JobSpec)
    assert spec.dataset == "mnist"
    assert spec.model == "lenet"
    assert spec.shards == 4
    assert spec.split.method == "stratified"
    assert spec.merge.method == "simple_average"
    assert spec.rounds == 5
    assert spec.local_epochs == 1
    assert spec.runtimes == ["process"]
    # everything else keeps the wire defaults
    assert spec.replication == JobSpec(dataset="mnist").replication


def test_defaults_are_the_job_and_server_defaults() -> None:
    d = demo.DemoOptions()
    job = JobSpec(dataset=d.dataset)
    assert demo.build_job_spec(d) == job  # the demo's default job is JobSpec's default job
    assert (d.volunteers, d.rounds, d.local_epochs, d.seed) == (
        job.shards,
        job.rounds,
        job.local_epochs,
        job.seed,
    )
    assert (d.split, d.merge, d.update_encoding) == (
        job.split.method,
        job.merge.method,
        job.update_encoding,
    )
    assert [d.executor] == job.runtimes
    assert demo.delay_bound(d) == job.replication.delay_bound_s
    server = ServerConfig(state_dir=d.state_dir, runs_dir=DEFAULT_RUNS_DIR, operator_token="")
    assert (d.port, d.runs_dir) == (server.port, server.runs_dir)


def test_options_reach_the_job_spec() -> None:
    opts = demo.parse_args(
        [
            "--dataset", "fashion-mnist",
            "--volunteers", "3",
            "--rounds", "2",
            "--split", "dirichlet",
            "--merge", "trimmed_mean",
            "--local-epochs", "2",
            "--executor", "docker",
            "--port", "9000",
            "--state-dir", "/tmp/x/state",
            "--runs-dir", "/tmp/x/runs",
            "--seed", "7",
        ]
    )  # fmt: skip
    assert opts.port == 9000
    assert opts.state_dir == Path("/tmp/x/state")
    spec = demo.build_job_spec(opts)
    assert spec.dataset == "fashion-mnist"
    assert spec.shards == 3
    assert spec.rounds == 2
    assert spec.split.method == "dirichlet"
    assert spec.merge.method == "trimmed_mean"
    assert spec.local_epochs == 2
    assert spec.seed == 7
    assert spec.runtimes == ["docker"]


def test_job_spec_json_round_trips() -> None:
    spec = demo.build_job_spec(demo.parse_args(["--merge", "median", "--split", "shards"]))
    body = spec.model_dump(mode="json")
    assert body["merge"]["method"] == "median"
    assert body["split"]["method"] == "shards"
    assert JobSpec.model_validate(body) == spec


@pytest.mark.parametrize(
    "argv",
    [
        ["--dataset", "cifar10"],
        ["--split", "alphabetical"],
        ["--merge", "max"],
        ["--executor", "k8s"],
        ["--volunteers", "0"],
        ["--rounds", "0"],
        ["--rounds", "two"],
        ["--local-epochs", "101"],  # JobSpec allows at most 100
        ["--port", "70000"],
        ["--timeout", "0"],
    ],
)
def test_invalid_options_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        demo.parse_args(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_choices_follow_the_wire_models() -> None:
    assert set(demo.DATASETS) == {"mnist", "fashion-mnist", "digits"}
    assert "simple_average" in demo.MERGE_METHODS
    assert "stratified" in demo.SPLIT_METHODS
    assert "process" in demo.EXECUTORS


def test_server_and_client_commands() -> None:
    opts = demo.parse_args(["--state-dir", "/s", "--runs-dir", "/r", "--executor", "process"])
    cmd = demo.server_command(opts, 8123)
    assert cmd[:4] == [sys.executable, "-m", "work_server", "serve"]
    assert "--no-access-log" in cmd  # the demo's server log stays readable
    pairs = [arg for arg in cmd[4:] if arg != "--no-access-log"]
    flags = dict(zip(pairs[::2], pairs[1::2], strict=True))
    assert flags == {
        "--host": "127.0.0.1",
        "--port": "8123",
        "--state-dir": "/s",
        "--runs-dir": "/r",
        "--interval-transitioner": "0.5",
        "--interval-validator": "0.5",
        "--interval-aggregator": "0.5",
        "--retry-after": "0.5",
    }
    with_data = demo.server_command(demo.parse_args(["--data-dir", "/d"]), 1)
    assert with_data[-2:] == ["--data-dir", "/d"]

    attach = demo.client_attach_command(opts, 2, "http://127.0.0.1:8123")
    assert attach == [
        sys.executable, "-m", "volunteer_client", "--state-dir", "/s/clients/2",
        "attach", "http://127.0.0.1:8123", "--name", "volunteer-2", "--runtimes", "process",
    ]  # fmt: skip
    run = demo.client_run_command(opts, 2)
    assert run == [
        sys.executable, "-m", "volunteer_client", "--state-dir", "/s/clients/2",
        "run", "--executor", "process", "--threads", "1",
    ]  # fmt: skip


def test_child_env_passes_the_operator_token_only_to_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("YADML_OPERATOR_TOKEN", "outer")
    assert demo.child_env(operator_token="tok")["YADML_OPERATOR_TOKEN"] == "tok"
    assert "YADML_OPERATOR_TOKEN" not in demo.child_env()
    assert demo.child_env()["PYTHONUNBUFFERED"] == "1"


def test_pick_port_moves_off_a_busy_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        port, moved = demo.pick_port(taken)
        assert moved
        assert port != taken
        assert demo.port_is_free(port)
    free = free_port()
    assert demo.pick_port(free) == (free, False)


def test_prepare_state_dir_wipes_only_its_own(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    demo.prepare_state_dir(state, reuse=False)
    (state / "old.db").write_text("x")
    demo.prepare_state_dir(state, reuse=True)
    assert (state / "old.db").exists()
    demo.prepare_state_dir(state, reuse=False)
    assert not (state / "old.db").exists()
    assert (state / demo.STATE_MARKER).is_file()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious").write_text("x")
    with pytest.raises(demo.DemoError, match="not created by the demo"):
        demo.prepare_state_dir(foreign, reuse=False)
    assert (foreign / "precious").exists()


def test_update_encoding_option_reaches_the_job_spec() -> None:
    assert demo.build_job_spec(demo.parse_args([])).update_encoding == "fp32"
    opts = demo.parse_args(["--update-encoding", "int8"])
    assert demo.build_job_spec(opts).update_encoding == "int8"
    with pytest.raises(SystemExit):
        demo.parse_args(["--update-encoding", "int4"])
