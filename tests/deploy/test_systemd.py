"""deploy/systemd/: the units pass `systemd-analyze verify` without a warning, carry the
limits and hardening the kit promises, and start the real CLIs with flags they accept."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY
from tests.requirements import require
from volunteer_client.cli import build_parser as client_parser
from work_server.cli import build_parser as server_parser

UNITS = DEPLOY / "systemd"
CLIENT = "yadml-client.service"
SERVER = "yadml-server@.service"
INIT = "yadml-server-init.service"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """Sections -> key -> values (systemd allows a key more than once), continuation lines
    joined, comments dropped."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"{path.name}: {line!r} outside a section"
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def one(unit: Unit, key: str, section: str = "Service") -> str:
    values = unit[section][key]
    assert len(values) == 1, f"{key} set {len(values)} times"
    return values[0]


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "RestrictNamespaces": "yes",
    "SystemCallArchitectures": "native",
}


@pytest.mark.parametrize("name", [CLIENT, SERVER, INIT])
def test_units_are_hardened(name: str) -> None:
    unit = parse_unit(UNITS / name)
    for key, value in HARDENING.items():
        assert one(unit, key) == value, f"{name}: {key}"
    assert "@system-service" in unit["Service"]["SystemCallFilter"]
    assert one(unit, "User") != "root"


def test_client_unit_limits_user_and_restart() -> None:
    unit = parse_unit(UNITS / CLIENT)
    assert one(unit, "User") == "yadml-client"
    assert one(unit, "StateDirectory") == "yadml-client"
    assert one(unit, "CPUQuota") == "200%"
    assert one(unit, "MemoryMax") == "4G"
    assert one(unit, "TasksMax") == "256"
    assert one(unit, "Restart") == "on-failure"
    assert one(unit, "Nice") == "19"
    assert one(unit, "WantedBy", "Install") == "multi-user.target"


def test_server_units_order_and_restart() -> None:
    server = parse_unit(UNITS / SERVER)
    assert one(server, "User") == "yadml"
    assert one(server, "Restart") == "on-failure"
    assert one(server, "MemoryMax") == "8G"
    assert INIT in one(server, "Requires", "Unit")
    assert INIT in one(server, "After", "Unit")
    init = parse_unit(UNITS / INIT)
    assert one(init, "Type") == "oneshot"
    assert one(init, "RemainAfterExit") == "yes"


def _exec_argv(unit: Unit, instance: str) -> list[str]:
    argv = shlex.split(one(unit, "ExecStart").replace("%i", instance))
    return [a.replace("${YADML_DATABASE_URL}", "postgresql://u:p@db/yadml") for a in argv]


def test_exec_start_flags_are_accepted_by_the_real_clis() -> None:
    client = _exec_argv(parse_unit(UNITS / CLIENT), "")
    assert client[0] == "/opt/yadml/venv/bin/yadml-client"
    args = client_parser().parse_args(client[1:])
    assert (args.command, args.executor, args.threads) == ("run", "process", 2)

    server = _exec_argv(parse_unit(UNITS / SERVER), "8081")
    assert server[0] == "/opt/yadml/venv/bin/yadml-server"
    args = server_parser().parse_args(server[1:])
    assert (args.command, args.port, args.host) == ("serve", 8081, "127.0.0.1")
    assert args.database_url == "postgresql://u:p@db/yadml"
    assert args.trusted_proxy == ["127.0.0.1"]

    init = _exec_argv(parse_unit(UNITS / INIT), "")
    assert init[:2] == ["/opt/yadml/venv/bin/python", "/opt/yadml/init.py"]
    assert init[2:] == [
        "--state-dir", "/var/lib/yadml", "--runs-dir", "/var/lib/yadml/runs",
        "--database-url", "postgresql://u:p@db/yadml",
    ]  # fmt: skip


def _verify(analyze: str, root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [analyze, "verify", "--man=no", f"--root={root}", *units],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` in a root that holds the system's units, these units and
    the executables they name (verify checks that the paths exist; the flags are checked
    against the real parsers above). Any warning fails: verify exits 0 on bad values."""
    analyze = shutil.which("systemd-analyze")
    system_units = Path("/usr/lib/systemd/system")
    require(analyze is not None and system_units.is_dir(), "systemd-analyze missing (systemd)")
    assert analyze is not None
    root = tmp_path / "root"
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "lib").symlink_to("usr/lib")
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for unit in UNITS.glob("*.service"):
        shutil.copy(unit, etc / unit.name)
    for exe in ("yadml-client", "yadml-server", "python"):
        path = root / "opt/yadml/venv/bin" / exe
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    proc = _verify(analyze, root, CLIENT, "yadml-server@8081.service", INIT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", proc.stdout + proc.stderr
    assert proc.stderr.strip() == "", proc.stdout + proc.stderr

    # The check is real: a typo in a directive is reported.
    broken = (etc / CLIENT).read_text().replace("CPUQuota=200%", "CPUQuota=lots")
    (etc / CLIENT).write_text(broken)
    proc = _verify(analyze, root, CLIENT)
    assert "Invalid CPU quota" in proc.stdout + proc.stderr
