"""The simulation's bookkeeping: a host's unit in progress, the counters, the idle pool."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from bench.scalesim.server import Claim


@dataclass
class Task:
    claim: Claim
    remaining_s: float
    fail: bool
    late_s: float
    segment_start: float | None = None  # computing since (None: paused or done)
    computed: bool = False


@dataclass
class Counters:
    claims: int = 0
    polls_empty: int = 0
    uploads: dict[str, int] = field(default_factory=lambda: {"accepted": 0, "late": 0, "gone": 0})
    failures: int = 0
    failures_gone: int = 0  # reported after the deadline: already counted as no reply
    aborted: int = 0
    events: int = 0
    virtual_polls: float = 0.0
    virtual_heartbeats: float = 0.0
    fluid_cpu: dict[str, float] = field(
        default_factory=lambda: {"idle_polls": 0.0, "heartbeats": 0.0}
    )
    overloaded_s: float = 0.0
    rho_time: float = 0.0  # integral of rho dt
    now_calls: int = 0


class IndexedSet:
    """A set with O(1) add, remove and uniform random choice."""

    def __init__(self) -> None:
        self.items: list[int] = []
        self.pos: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, x: int) -> bool:
        return x in self.pos

    def add(self, x: int) -> None:
        if x not in self.pos:
            self.pos[x] = len(self.items)
            self.items.append(x)

    def discard(self, x: int) -> None:
        i = self.pos.pop(x, None)
        if i is None:
            return
        last = self.items.pop()
        if i < len(self.items):
            self.items[i] = last
            self.pos[last] = i

    def choice(self, rnd: random.Random) -> int:
        return self.items[rnd.randrange(len(self.items))]
