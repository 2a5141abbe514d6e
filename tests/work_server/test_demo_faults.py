"""The demo's fault/attack options reach the clients' command lines."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import pytest
from rich.console import Console

from work_server import demo
from work_server.host_status import HostDetail, HostList, RuntimeTrust


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


def test_trust_table_reads_the_operators_host_list() -> None:
    def host(i: int, invalid: int) -> HostDetail:
        t = datetime(2024, 1, 1, tzinfo=UTC)
        trust = RuntimeTrust(
            runtime="process", consecutive_valid=3 - invalid, valid=3, invalid=invalid, error=0,
            daily_quota=50, quota_used_today=4, trusted=invalid == 0,
        )  # fmt: skip
        return HostDetail(
            host_id=i, name=f"volunteer-{i}", os="Linux", arch="x86_64", cpus=1, memory_mb=1024,
            runtimes=["process"], created_at=t, results_valid=3, results_invalid=invalid,
            results_error=0, credit=1.0, last_contact=t, banned=False,
            consecutive_valid=3 - invalid, trust=[trust],
        )  # fmt: skip

    console = Console(width=120, record=True)
    console.print(demo.trust_table(HostList(hosts=[host(1, 0), host(2, 2)]), [2]))
    lines = console.export_text().splitlines()
    assert any("volunteer-1" in line and "honest" in line for line in lines)
    assert any("volunteer-2" in line and "attacker" in line for line in lines)
