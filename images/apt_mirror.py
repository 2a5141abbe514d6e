"""The Debian archive that images/build_rootfs.sh debootstraps from, read from the host's apt.

The image builds must not name any package host of their own: they use whatever archive (or
local mirror, or caching proxy) the host already installs its Debian packages from.

Choice, in order:
  1. ``DEBIAN_MIRROR`` when set and not empty (an explicit override; there is no default URL);
  2. the first binary (``deb``) source, in apt's reading order (``sources.list``, then
     ``sources.list.d/`` by file name; one-line ``*.list`` and deb822 ``*.sources`` files),
     that carries component ``main`` of the wanted suite (``bookworm``);
  3. else the first such source of another plain Debian release (a suite without a
     ``-updates``/``-security`` suffix, from an archive whose path ends in ``/debian``): a
     Debian archive serves every release, so a trixie host's mirror serves bookworm too.
Sources whose URI debootstrap cannot fetch from (``cdrom:``, ``mirror+file:``...) and
disabled deb822 stanzas (``Enabled: no``) are skipped.

usage: python3 images/apt_mirror.py [--apt-dir /etc/apt] [--suite bookworm]
prints the URI; exit status 1 with a message on stderr when there is none.
Standard library only: it runs under the host's python3, before any virtual environment.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

FETCHABLE_SCHEMES = frozenset({"http", "https", "file"})
_OPTIONS = re.compile(r"\[[^\]]*\]")


class NoMirrorError(Exception):
    """No usable Debian archive in the apt sources and no DEBIAN_MIRROR."""


@dataclass(frozen=True)
class Source:
    """One binary package source as apt reads it: one URI, its suites and components."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_one_line(text: str) -> Iterator[Source]:
    """Sources of a one-line format file (``deb [options] URI SUITE COMPONENT...``)."""
    for raw in text.splitlines():
        line = _OPTIONS.sub(" ", raw.split("#", 1)[0]).split()
        if len(line) >= 3 and line[0] == "deb":
            yield Source(uri=line[1], suites=(line[2],), components=tuple(line[3:]))


def parse_deb822(text: str) -> Iterator[Source]:
    """Sources of a deb822 format file (stanzas of ``Types:``, ``URIs:``, ``Suites:``...)."""
    for stanza in _stanzas(text):
        if "deb" not in stanza.get("types", "").split():
            continue
        if stanza.get("enabled", "yes").strip().lower() == "no":
            continue
        suites = tuple(stanza.get("suites", "").split())
        components = tuple(stanza.get("components", "").split())
        for uri in stanza.get("uris", "").split():
            yield Source(uri=uri, suites=suites, components=components)


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    fields: dict[str, str] = {}
    key = ""
    for line in [*text.splitlines(), ""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if fields:
                yield fields
            fields, key = {}, ""
        elif line[0].isspace() and key:  # a folded field goes on
            fields[key] += " " + line.strip()
        elif ":" in line:
            name, value = line.split(":", 1)
            key = name.strip().lower()
            fields[key] = value.strip()


def read_sources(apt_dir: Path) -> Iterator[Source]:
    """Every binary source under ``apt_dir``, in the order apt reads the files."""
    files = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        yield from parse_deb822(text) if path.suffix == ".sources" else parse_one_line(text)


def _fetchable(source: Source) -> bool:
    return urlsplit(source.uri).scheme in FETCHABLE_SCHEMES and "main" in source.components


def _debian_release(source: Source) -> bool:
    path = urlsplit(source.uri).path.rstrip("/")
    return path.endswith("/debian") and any("-" not in s for s in source.suites)


def choose_mirror(sources: list[Source], *, suite: str) -> str:
    """The archive URI for ``suite``'s ``main`` (rules 2 and 3 of the module docstring)."""
    usable = [s for s in sources if _fetchable(s)]
    for rule in (lambda s: suite in s.suites, _debian_release):
        for source in usable:
            if rule(source):
                return source.uri.rstrip("/")
    raise NoMirrorError(f"no Debian archive with {suite} main")


def find_mirror(*, apt_dir: Path, suite: str, environ: Mapping[str, str]) -> str:
    """DEBIAN_MIRROR if set, else the archive the host's apt sources name for ``suite``."""
    override = environ.get("DEBIAN_MIRROR", "").strip()
    if override:
        return override
    try:
        return choose_mirror(list(read_sources(apt_dir)), suite=suite)
    except NoMirrorError as exc:
        raise NoMirrorError(
            f"{exc} in {apt_dir}/sources.list or {apt_dir}/sources.list.d/*.list, *.sources;"
            " set DEBIAN_MIRROR to the URI of a Debian archive (or a local mirror of one)"
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the Debian archive to debootstrap from.")
    parser.add_argument("--apt-dir", type=Path, default=Path("/etc/apt"))
    parser.add_argument("--suite", default="bookworm")
    args = parser.parse_args(argv)
    try:
        print(find_mirror(apt_dir=args.apt_dir, suite=args.suite, environ=os.environ))
    except NoMirrorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
