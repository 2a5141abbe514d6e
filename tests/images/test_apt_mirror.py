"""images/apt_mirror.py: which Debian archive the image builds debootstrap from.

Run as the build script runs it (the host's Python, a subprocess) on sample apt directories.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HELPER = Path(__file__).resolve().parents[2] / "images" / "apt_mirror.py"

DEB822_DEBIAN = """\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""

DEB822_THIRD_PARTY = """\
Types: deb
URIs: https://vendor.example/node_20.x
Suites: nodistro
Components: main
"""


def run(apt_dir: Path, *args: str, mirror: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DEBIAN_MIRROR"}
    if mirror is not None:
        env["DEBIAN_MIRROR"] = mirror
    return subprocess.run(
        [sys.executable, str(HELPER), "--apt-dir", str(apt_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def mirror_of(apt_dir: Path, *args: str) -> str:
    result = run(apt_dir, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def write(apt_dir: Path, name: str, text: str) -> None:
    path = apt_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_deb822_sources_file(tmp_path: Path) -> None:
    write(tmp_path, "sources.list.d/debian.sources", DEB822_DEBIAN)
    assert mirror_of(tmp_path) == "http://mirror.example/debian"


def test_one_line_sources_list_with_options_and_comments(tmp_path: Path) -> None:
    write(
        tmp_path,
        "sources.list",
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb http://security.example/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main contrib"
        "  # the archive\n",
    )
    assert mirror_of(tmp_path) == "http://mirror.example/debian"


def test_sources_list_comes_before_sources_list_d(tmp_path: Path) -> None:
    write(tmp_path, "sources.list", "deb http://first.example/debian bookworm main\n")
    write(tmp_path, "sources.list.d/debian.sources", DEB822_DEBIAN)
    assert mirror_of(tmp_path) == "http://first.example/debian"


def test_sources_list_d_in_file_name_order_of_both_formats(tmp_path: Path) -> None:
    write(tmp_path, "sources.list.d/b.list", "deb http://b.example/debian bookworm main\n")
    write(tmp_path, "sources.list.d/a.sources", DEB822_DEBIAN)
    assert mirror_of(tmp_path) == "http://mirror.example/debian"


def test_third_party_and_disabled_sources_are_not_chosen(tmp_path: Path) -> None:
    write(tmp_path, "sources.list.d/00-node.sources", DEB822_THIRD_PARTY)
    write(
        tmp_path, "sources.list.d/01-cloud.list", "deb https://v.example/apt cloud-bookworm main\n"
    )
    write(
        tmp_path,
        "sources.list.d/02-off.sources",
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\n"
        "Enabled: no\n",
    )
    write(
        tmp_path,
        "sources.list.d/03-nonfree.list",
        "deb http://nf.example/debian bookworm non-free\n",
    )
    write(tmp_path, "sources.list.d/04-cd.list", "deb cdrom:[Debian 12]/ bookworm main\n")
    write(
        tmp_path, "sources.list.d/05-x.list.disabled", "deb http://x.example/debian bookworm main\n"
    )
    write(tmp_path, "sources.list.d/99-debian.sources", DEB822_DEBIAN)
    assert mirror_of(tmp_path) == "http://mirror.example/debian"


def test_deb822_multiple_uris_and_folded_fields(tmp_path: Path) -> None:
    write(
        tmp_path,
        "sources.list.d/debian.sources",
        "types: deb-src deb\nURIs:\n http://one.example/debian\n http://two.example/debian\n"
        "Suites: bookworm\nComponents: contrib\n main\n",
    )
    assert mirror_of(tmp_path) == "http://one.example/debian"


def test_another_debian_release_serves_the_suite(tmp_path: Path) -> None:
    write(tmp_path, "sources.list.d/ubuntu.list", "deb http://ubuntu.example/ubuntu noble main\n")
    write(
        tmp_path,
        "sources.list.d/debian.sources",
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: trixie-updates trixie\n"
        "Components: main\n",
    )
    assert mirror_of(tmp_path) == "http://mirror.example/debian"
    assert mirror_of(tmp_path, "--suite", "noble") == "http://ubuntu.example/ubuntu"


def test_explicit_override_wins(tmp_path: Path) -> None:
    write(tmp_path, "sources.list.d/debian.sources", DEB822_DEBIAN)
    result = run(tmp_path, mirror=" file:///srv/debian ")
    assert result.returncode == 0
    assert result.stdout.strip() == "file:///srv/debian"


@pytest.mark.parametrize("mirror", [None, ""])
def test_no_debian_archive_is_a_clear_error(tmp_path: Path, mirror: str | None) -> None:
    write(tmp_path, "sources.list.d/node.sources", DEB822_THIRD_PARTY)
    write(tmp_path, "sources.list.d/ubuntu.list", "deb http://ubuntu.example/ubuntu noble main\n")
    result = run(tmp_path, mirror=mirror)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "no Debian archive with bookworm main" in result.stderr
    assert "DEBIAN_MIRROR" in result.stderr


def test_missing_apt_directory_is_a_clear_error(tmp_path: Path) -> None:
    result = run(tmp_path / "absent")
    assert result.returncode == 1
    assert "set DEBIAN_MIRROR" in result.stderr
