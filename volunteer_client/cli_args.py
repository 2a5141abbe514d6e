"""Argument types of the ``yadml-client`` command line (:mod:`volunteer_client.cli`): each
turns a bad value into argparse's usage error (exit status 2) with the reason."""

from __future__ import annotations

import argparse
from typing import cast

from pydantic import TypeAdapter, ValidationError

from yadml_common.wire import RUNTIMES, DisplayName, Runtime

__all__ = ["positive_float", "positive_int", "public_name", "runtimes"]

_DISPLAY_NAME: TypeAdapter[str] = TypeAdapter(DisplayName)


def runtimes(value: str) -> list[Runtime]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in RUNTIMES]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"runtimes must be a comma-separated subset of {','.join(RUNTIMES)}"
        )
    return [cast(Runtime, n) for n in dict.fromkeys(names)]


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return number


def positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return number


def public_name(value: str) -> str:
    """A public display name as the server will take it (trimmed, 1-64 printable
    characters, no HTML), checked before anything is sent."""
    try:
        return _DISPLAY_NAME.validate_python(value)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(f"invalid public name: {exc.errors()[0]['msg']}") from None
