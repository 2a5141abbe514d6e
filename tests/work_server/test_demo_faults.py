"""The demo's fault/attack options reach the clients' command lines."""

from __future__ import annotations

import pytest

from work_server import demo


def test_attack_fraction_picks_the_last_volunteers() -> None:
    opts = demo.parse_args(["--volunteers", "10", "--attack", "signflip:0.2"])
    assert demo.attack_plan(opts) == ("signflip", [9, 10])
    assert "--attack" in demo.client_run_command(opts, 10)
    assert "--attack" not in demo.client_run_command(opts, 1)
    assert demo.attack_plan(demo.parse_args(["--attack", "noise"])) == ("noise", [4])  # 0.2 x 4
    assert demo.attack_plan(demo.parse_args([])) == ("", [])


def test_faults_go_to_every_client_and_shorten_the_deadline() -> None:
    opts = demo.parse_args(["--faults", "crash:0.3,late:0.1"])
    cmd = demo.client_run_command(opts, 2)
    assert cmd[cmd.index("--faults") + 1] == "crash:0.3,late:0.1"
    assert demo.build_job_spec(opts).replication.delay_bound_s == 60.0
    spec = demo.build_job_spec(demo.parse_args(["--adaptive", "--screen-norm-ratio", "3"]))
    assert spec.replication.adaptive and spec.merge.screen_norm_ratio == 3.0


def test_bad_attack_fraction_is_refused() -> None:
    with pytest.raises(SystemExit):
        demo.parse_args(["--attack", "signflip:2"])
