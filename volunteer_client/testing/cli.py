"""``python -m volunteer_client.testing``: ``yadml-client`` with fault and attack injection.

::

    python -m volunteer_client.testing [--state-dir DIR] run [yadml-client run options]
        [--faults crash:0.3,late:0.1,vanish:0.05,garbage:0.05]
        [--attack signflip|noise|scale|labelflip|alie[:PARAM]] [--fault-seed N]

Every other command (``attach``, ``status``, ``detach``) is ``yadml-client``'s. With faults or
an attack the executor ``run`` builds is wrapped in :class:`~.faults.FaultyExecutor`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from .. import cli
from ..executors import Executor
from .faults import AttackSpec, FaultyExecutor, parse_attack, parse_faults

__all__ = ["add_injection_arguments", "build_parser", "inject", "main"]

PROG = "python -m volunteer_client.testing"

log = logging.getLogger("volunteer_client")


def _faults(value: str) -> dict[str, float]:
    try:
        return parse_faults(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _attack(value: str) -> AttackSpec | None:
    try:
        return parse_attack(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_injection_arguments(run: argparse.ArgumentParser) -> None:
    """The ``run`` options of this entry point."""
    group = run.add_argument_group("fault and attack injection (testing only)")
    group.add_argument(
        "--faults",
        type=_faults,
        default={},
        help="inject faults per unit, e.g. crash:0.3,late:0.1,vanish:0.05,garbage:0.05 "
        "(see volunteer_client/testing/faults.py)",
    )
    group.add_argument(
        "--attack",
        type=_attack,
        default=None,
        help="act as an attacker on every unit: signflip|noise|scale|labelflip|alie[:PARAM] "
        "(see volunteer_client/testing/attacks.py)",
    )
    group.add_argument("--fault-seed", type=int, default=None, help="seed of the fault draws")


def inject(executor: Executor, args: argparse.Namespace) -> Executor:
    """``executor`` wrapped in a :class:`FaultyExecutor` when faults or an attack are asked
    for, else unchanged."""
    if not args.faults and args.attack is None:
        return executor
    log.warning("fault injection on: faults %s, attack %s", args.faults, args.attack)
    return FaultyExecutor(executor, faults=args.faults, attack=args.attack, seed=args.fault_seed)


def build_parser() -> argparse.ArgumentParser:
    return cli.build_parser(prog=PROG, run_arguments=add_injection_arguments)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(argv, parser=build_parser(), wrap_executor=inject)
