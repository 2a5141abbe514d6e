"""Testing only: a volunteer client that injects faults or attacks.

``python -m volunteer_client.testing`` is ``yadml-client`` (the same commands and options,
:mod:`volunteer_client.cli`) plus, on ``run``, ``--faults``, ``--attack`` and
``--fault-seed``: the demo, the benchmarks and the tests use it to play broken hardware and
attackers. The volunteer's own ``yadml-client run`` has none of these switches.

* :mod:`.cli`: the entry point; :mod:`.faults`: :class:`~.faults.FaultyExecutor`, the
  executor wrapper, and the spec parsers; :mod:`.attacks`: the attacks' tensor math.
"""

from __future__ import annotations
