"""The trainer's version and its file list, derived from this package's source.

The files are every module of ``yadml_trainer`` plus, followed through their ``import``
statements, the ``yadml_common`` modules they need (with the packages' ``__init__.py``).
The version is ``<yadml version>-<first 12 hex digits of sha256 over those files>``: the
worker image's tag, the VM image's name and the manifest the project publishes all carry
it, so a change to any file the trainer runs gives a new version, and nothing else does.
No list is kept by hand: a new module of this package is picked up by itself.

``python -m yadml_trainer.version [version|files]`` prints either (the image build scripts
ask it).
"""

from __future__ import annotations

import ast
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["PACKAGES", "main", "source_root", "trainer_files", "trainer_version"]

#: The top-level packages whose modules may travel with the trainer.
PACKAGES = ("yadml_trainer", "yadml_common")


def source_root() -> Path:
    """The directory that holds ``yadml_trainer/`` and ``yadml_common/``."""
    return Path(__file__).resolve().parents[1]


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, package: str) -> set[str]:
    """The project modules ``path`` imports (absolute and relative imports alike)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            # ``from pkg import mod`` names a module as often as an attribute.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def trainer_files(root: Path | None = None) -> list[str]:
    """The source files the trainer runs, relative to ``root``, sorted."""
    root = source_root() if root is None else root
    todo = [p for p in (root / "yadml_trainer").rglob("*.py") if "__pycache__" not in p.parts]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        rel = path.relative_to(root)
        init = root / rel.parts[0] / "__init__.py"  # importing a module runs its package's
        if init.is_file():
            todo.append(init)
        for module in _imported_modules(path, ".".join(rel.parent.parts)):
            target = _module_file(root, module)
            if target is not None:
                todo.append(target)
    return sorted(p.relative_to(root).as_posix() for p in seen)


def trainer_version(root: Path | None = None) -> str:
    """``<yadml version>-<first 12 hex digits of sha256 over trainer_files()>``."""
    from yadml_common import __version__

    root = source_root() if root is None else root
    digest = hashlib.sha256()
    for name in trainer_files(root):
        digest.update(name.encode() + b"\0")
        digest.update((root / name).read_bytes())
        digest.update(b"\0")
    return f"{__version__}-{digest.hexdigest()[:12]}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    what = args[0] if args else "version"
    if what == "version":
        print(trainer_version())
    elif what == "files":
        print("\n".join(trainer_files()))
    else:
        print("usage: python -m yadml_trainer.version [version|files]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
