"""Discrete-event scale model of the YADML scheduler (``bench/scale_sim.py``).

* :mod:`scalesim.hosts`: the simulated volunteer population (availability, speed, failures);
* :mod:`scalesim.server`: the real scheduling code on a real SQLite database, every call
  timed with ``time.process_time``;
* :mod:`scalesim.engine`: the event loop with a simulated clock that ties the two together.
"""
