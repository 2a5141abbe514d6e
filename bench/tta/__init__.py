"""Time to accuracy (``bench.time_to_accuracy``): the centralised baseline, the full system
run, and the breakdown of the system's wall time from the timestamps it records."""
