"""The worker image's name and the trainer version it carries.

The image holds exactly the files of :data:`TRAINER_FILES` (plus CPU PyTorch). Its tag is
``yadml-worker:<trainer version>``, where the version is the package version and a hash of
those files, so a client finds the image that matches its own trainer
(:func:`default_image`). ``images/build_worker.sh`` asks this module for the tag and the
file list (:func:`main`: ``python -m volunteer_client.executors.image version|tag|files``).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "IMAGE_REPOSITORY",
    "TRAINER_FILES",
    "default_image",
    "main",
    "source_root",
    "trainer_version",
]

IMAGE_REPOSITORY = "yadml-worker"

#: The Python files inside the image, relative to the directory holding the packages.
TRAINER_FILES = (
    "volunteer_client/trainer.py",
    "volunteer_client/trainer_loop.py",
    "yadml_common/__init__.py",
    "yadml_common/encoding.py",
    "yadml_common/nn.py",
    "yadml_common/wire.py",
)


def source_root() -> Path:
    """The directory that holds ``volunteer_client/`` and ``yadml_common/``."""
    return Path(__file__).resolve().parents[2]


def trainer_version(root: Path | None = None) -> str:
    """``<yadml version>-<first 12 hex digits of sha256 over TRAINER_FILES>``."""
    from yadml_common import __version__

    root = source_root() if root is None else root
    digest = hashlib.sha256()
    for name in TRAINER_FILES:
        digest.update(name.encode() + b"\0")
        digest.update((root / name).read_bytes())
        digest.update(b"\0")
    return f"{__version__}-{digest.hexdigest()[:12]}"


def default_image(root: Path | None = None) -> str:
    """The tag ``make image`` gives the image of this checkout's trainer."""
    return f"{IMAGE_REPOSITORY}:{trainer_version(root)}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    what = args[0] if args else "tag"
    if what == "version":
        print(trainer_version())
    elif what == "tag":
        print(default_image())
    elif what == "files":
        print("\n".join(TRAINER_FILES))
    else:
        print(
            "usage: python -m volunteer_client.executors.image [version|tag|files]", file=sys.stderr
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
