"""YADML's benchmarks, one module each, run from the repository root as
``python -m bench.<name>`` (``python -m bench.run_all`` runs the suite: ``make bench``).
Each prints its tables and writes ``bench/results/<name>.json``; ``bench.common`` holds the
options and the output they share."""
