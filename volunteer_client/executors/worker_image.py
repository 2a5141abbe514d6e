"""The worker image's name: ``yadml-worker:<trainer version>``.

The image holds the trainer's files (:func:`yadml_trainer.version.trainer_files`) plus CPU
PyTorch; its tag carries the trainer version, so a client finds the image that matches its
own trainer (:func:`default_image`). ``images/build_worker.sh`` asks
:mod:`yadml_trainer.version` for the version and the file list.
"""

from __future__ import annotations

from pathlib import Path

from yadml_trainer.version import trainer_version

__all__ = ["IMAGE_REPOSITORY", "default_image"]

IMAGE_REPOSITORY = "yadml-worker"


def default_image(root: Path | None = None) -> str:
    """The tag ``make image`` gives the image of this checkout's trainer."""
    return f"{IMAGE_REPOSITORY}:{trainer_version(root)}"
