"""The simulated volunteer population: lightweight numpy records, one row per host.

Distributions (all parameters live in :class:`HostModel`, so they can be swapped for other
fits; the provenance of each default is given next to it and in the benchmark's README text):

* **availability**: alternating on/off intervals, both Weibull. Javadi, Kondo, Vincent and
  Anderson (MASCOTS 2009, "Discovering statistical models of availability in large distributed
  systems: an empirical study of SETI@home") find that the availability and unavailability
  intervals of SETI@home's hosts with independent, identically distributed availability are
  best fitted by Weibull (also gamma/log-normal) laws with shape parameters well below 1, i.e.
  many short intervals and a long tail of long ones, with mean intervals of hours. The
  defaults (on: shape 0.4, scale 3 h, mean 10 h; off: shape 0.45, scale 2 h, mean 4.9 h;
  availability ~67%) are representative values of that shape and scale, not one cluster of the
  paper's table.
* **speed**: log-normal per-host FLOPS (median 2 GFLOPS effective, sigma 0.6 in log space: the
  middle 90% of hosts span ~7x), after the heavy right skew of volunteer host speeds reported by
  Anderson and Reed (HICSS 2009, "Celebrating diversity in volunteer computing") and Heien,
  Kondo and Anderson (ICDCS 2011, "Correlated resource models of Internet end hosts").
* **errors**: per-host client-error probability; most hosts almost never fail and a minority
  fail often (Kondo, Araujo, Malecot et al., Euro-Par 2007, "Characterizing result errors in
  Internet desktop grids": errors are concentrated on few hosts). Default: 90% of hosts at
  0.5%, 10% at 10%.
* **lateness**: with probability ``late_rate`` a host sits on a unit for 1-3 delay bounds
  before uploading (a user suspending computation); further lateness comes from the
  availability model itself, since a host only computes while it is on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class HostModel:
    on_shape: float = 0.4
    on_scale_s: float = 3 * 3600.0
    off_shape: float = 0.45
    off_scale_s: float = 2 * 3600.0
    speed_median_gflops: float = 2.0
    speed_sigma: float = 0.6
    flaky_fraction: float = 0.1
    flaky_error_rate: float = 0.10
    error_rate: float = 0.005
    late_rate: float = 0.02

    def mean_on_s(self) -> float:
        return self.on_scale_s * math.gamma(1.0 + 1.0 / self.on_shape)

    def mean_off_s(self) -> float:
        return self.off_scale_s * math.gamma(1.0 + 1.0 / self.off_shape)

    def availability(self) -> float:
        on, off = self.mean_on_s(), self.mean_off_s()
        return on / (on + off)


class Population:
    """``n`` hosts: speed (GFLOPS), error rate, and the current availability state with the
    time of its next change, after a warm-up of the on/off process so that at ``t0`` the
    hosts are in their stationary mix (long intervals over-represented, as in reality)."""

    def __init__(
        self,
        n: int,
        model: HostModel,
        rng: np.random.Generator,
        *,
        t0: float,
        warmup_s: float = 14 * 86400.0,
    ) -> None:
        self.n = n
        self.model = model
        self.rng = rng
        self.speed_gflops = model.speed_median_gflops * np.exp(
            model.speed_sigma * rng.standard_normal(n)
        )
        flaky = rng.random(n) < model.flaky_fraction
        self.error_rate = np.where(flaky, model.flaky_error_rate, model.error_rate)
        self.online, self.next_toggle = self._warm_up(t0, warmup_s)

    def interval(self, online: bool) -> float:
        """One availability (``online``) or unavailability interval, in seconds."""
        m = self.model
        if online:
            return float(m.on_scale_s * self.rng.weibull(m.on_shape))
        return float(m.off_scale_s * self.rng.weibull(m.off_shape))

    def _intervals(self, online: np.ndarray) -> np.ndarray:
        m = self.model
        on = m.on_scale_s * self.rng.weibull(m.on_shape, online.size)
        off = m.off_scale_s * self.rng.weibull(m.off_shape, online.size)
        return np.where(online, on, off)

    def _warm_up(self, t0: float, warmup_s: float) -> tuple[np.ndarray, np.ndarray]:
        online = self.rng.random(self.n) < self.model.availability()
        nxt = (t0 - warmup_s) + self._intervals(online)
        due = np.flatnonzero(nxt <= t0)
        while due.size:
            online[due] = ~online[due]
            nxt[due] += self._intervals(online[due])
            due = due[nxt[due] <= t0]
        return online, nxt
