"""The client daemon: ask for work, download inputs, run the executor, upload, repeat.

:class:`Daemon` (``composition.py``) is what the CLI builds; it composes, one concern a
module:

- ``poll_loop.py``: asking for work while slots are free, pacing and backoff, heartbeats;
- ``units_in_flight.py``: one asyncio task per unit, started (signature checked),
  resumed after a restart, aborted on the server's word, cancelled on stop;
- ``unit_lifecycle.py``: the state machine of one unit (inputs, executor, upload, or
  failure report), each step persisted first so a restarted client resumes;
- ``retry.py``: :class:`Backoff` and the one retry policy of every transfer;
- ``key_learning.py``: pinning rotated project keys endorsed by a pinned key.

HTTP status codes never reach this package: :mod:`volunteer_client.api` turns them into
the error classes of :mod:`volunteer_client.errors`.
"""

from __future__ import annotations

from .composition import Daemon

__all__ = ["Daemon"]
