"""``yadml-server serve``'s options: their defaults are ``ServerConfig``'s, and each one
reaches the config."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from work_server.cli import build_parser, server_config
from work_server.config import DEFAULT_RUNS_DIR, DEFAULT_STATE_DIR, DaemonIntervals, ServerConfig
from work_server.ratelimit import Rate


def _config(*argv: str) -> ServerConfig:
    return server_config(build_parser().parse_args(["serve", *argv]), operator_token="t")


def test_bare_serve_builds_the_default_config() -> None:
    # fails as soon as an option's default disagrees with its ServerConfig field
    default = ServerConfig(
        state_dir=DEFAULT_STATE_DIR, runs_dir=DEFAULT_RUNS_DIR, operator_token="t"
    )
    assert _config() == default
    assert default.retry_after_s == 5.0  # the documented --retry-after default


def test_options_reach_the_config() -> None:
    config = _config(
        "--host", "0.0.0.0",
        "--port", "9000",
        "--state-dir", "/s",
        "--runs-dir", "/r",
        "--database-url", "postgresql+asyncpg://db/yadml",
        "--public-url", "https://example.org",
        "--max-running-jobs", "3",
        "--retry-after", "7",
        "--idle-polls-per-s", "50",
        "--max-retry-after", "900",
        "--interval-validator", "0.5",
        "--no-daemons",
        "--project-name", "P",
        "--rate-work-host", "2/10",
        "--trusted-proxy", "10.0.0.1",
    )  # fmt: skip
    assert (config.host, config.port) == ("0.0.0.0", 9000)
    assert (config.state_dir, config.runs_dir) == (Path("/s"), Path("/r"))
    assert config.database_url == "postgresql+asyncpg://db/yadml"
    assert config.public_url == "https://example.org"
    assert config.max_running_jobs == 3
    assert (config.retry_after_s, config.idle_polls_per_s, config.max_retry_after_s) == (
        7.0,
        50.0,
        900.0,
    )
    assert config.intervals == DaemonIntervals(validator=0.5)
    assert not config.run_daemons
    assert config.project_name == "P"
    assert config.rate_work_per_host == Rate(2.0, 10.0)
    assert config.trusted_proxies == frozenset({"10.0.0.1"})


def test_every_daemon_interval_has_an_option() -> None:
    args = vars(build_parser().parse_args(["serve"]))
    assert {f"interval_{f.name}" for f in fields(DaemonIntervals)} <= set(args)
