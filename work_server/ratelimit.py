"""In-process token-bucket rate limits (per client IP, per host).

Each key (an IP address or a host id) has a bucket of ``burst`` tokens refilled at
``rate`` tokens per second; a request takes one token, and without one it is refused
with 429 and a ``Retry-After`` of the seconds until the next token. The table of
buckets is bounded (least recently used keys are forgotten), so a flood of distinct
addresses costs memory O(max_keys). One server process = one set of buckets: behind
several server processes, limit at the reverse proxy as well (see SECURITY.md).
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass

from aiohttp import web

from work_server.errors import TooManyRequests


@dataclass(frozen=True)
class Rate:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    rate: float
    burst: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"RATE/BURST"``, e.g. ``"2/60"``: 2 per second, bursts of 60."""
        rate, _, burst = text.partition("/")
        r, b = float(rate), float(burst or rate)
        if not (r > 0 and b >= 1 and math.isfinite(r) and math.isfinite(b)):
            raise ValueError(f"bad rate {text!r}: want RATE/BURST with RATE > 0, BURST >= 1")
        return cls(r, b)


class RateLimiter:
    def __init__(self, name: str, rate: Rate, *, max_keys: int = 100_000) -> None:
        self.name = name
        self.rate = rate
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, t)

    def hit(self, key: str, now: float) -> None:
        """Take one token for ``key``; raise :class:`TooManyRequests` when there is none."""
        tokens, last = self._buckets.pop(key, (self.rate.burst, now))
        tokens = min(self.rate.burst, tokens + max(0.0, now - last) * self.rate.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate.rate
            raise TooManyRequests(
                f"too many {self.name} requests; retry in {math.ceil(wait)} s",
                retry_after_s=wait,
            )
        self._buckets[key] = (tokens - 1.0, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)


def client_ip(request: web.Request, trusted_proxies: frozenset[str]) -> str:
    """The peer address; behind a trusted reverse proxy, the last ``X-Forwarded-For`` hop.

    Only the proxy's own appended entry is believed (the rightmost one): everything left
    of it was written by the client and can be forged.
    """
    peer = request.remote or "unknown"
    if peer in trusted_proxies:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.split(",")[-1].strip()
        try:
            return str(ipaddress.ip_address(last))
        except ValueError:
            return peer
    return peer
