"""The demo's fault/attack options reach the clients' command lines."""

from __future__ import annotations

import sys

import pytest

from work_server import demo


def test_attack_fraction_picks_the_last_volunteers() -> None:
    opts = demo.parse_args(["--volunteers", "10", "--attack", "signflip:0.2"])
    assert demo.attack_plan(opts) == ("signflip", [9, 10])
    attacker, honest = demo.client_run_command(opts, 10), demo.client_run_command(opts, 1)
    assert "--attack" in attacker
    assert "--attack" not in honest
    # the switches exist only on the client's testing entry point
    assert attacker[2] == "volunteer_client.testing"
    assert honest[2] == "volunteer_client"
    assert demo.attack_plan(demo.parse_args(["--attack", "noise"])) == ("noise", [4])  # 0.2 x 4
    assert demo.attack_plan(demo.parse_args([])) == ("", [])


def test_faults_go_to_every_client_and_shorten_the_deadline() -> None:
    opts = demo.parse_args(["--faults", "crash:0.3,late:0.1"])
    cmd = demo.client_run_command(opts, 2)
    assert cmd[cmd.index("--faults") + 1] == "crash:0.3,late:0.1"
    assert cmd[:3] == [sys.executable, "-m", "volunteer_client.testing"]
    assert demo.build_job_spec(opts).replication.delay_bound_s == 60.0
    spec = demo.build_job_spec(demo.parse_args(["--adaptive", "--screen-norm-ratio", "3"]))
    assert spec.replication.adaptive
    assert spec.merge.screen_norm_ratio == 3.0


def test_bad_attack_fraction_is_refused() -> None:
    with pytest.raises(SystemExit):
        demo.parse_args(["--attack", "signflip:2"])


def test_the_demo_client_commands_parse() -> None:
    from volunteer_client.cli import build_parser
    from volunteer_client.testing.cli import build_parser as build_testing_parser

    opts = demo.parse_args(["--volunteers", "5", "--faults", "crash:0.3", "--attack", "scale"])
    for index in (1, 5):
        cmd = demo.client_run_command(opts, index)
        parsed = build_testing_parser().parse_args(cmd[3:])
        assert parsed.faults == {"crash": 0.3}
    honest = demo.client_run_command(demo.parse_args([]), 1)
    assert build_parser().parse_args(honest[3:]).command == "run"
