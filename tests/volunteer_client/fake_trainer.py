"""A stand-in for ``yadml_trainer.trainer`` in the process-executor tests.

Same command line; its behaviour comes from environment variables so tests stay fast
(no torch import):

* ``FAKE_TRAINER_STDERR``: text written to stderr first.
* ``FAKE_TRAINER_CHILD_PIDFILE``: start a grandchild that sleeps, write "<own pid> <child pid>".
* ``FAKE_TRAINER_IGNORE_TERM``: ignore SIGTERM (to test SIGKILL escalation).
* ``FAKE_TRAINER_SLEEP``: seconds to sleep (after writing progress 0.5).
* ``FAKE_TRAINER_EXIT``: exit status (default 0; with 0 the weights are copied to the output
  unless ``FAKE_TRAINER_NO_OUTPUT`` is set).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--shard", type=Path, required=True)
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--task", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--progress", type=Path, default=None)
    args = p.parse_args()
    env = os.environ
    sys.stderr.write(env.get("FAKE_TRAINER_STDERR", ""))
    sys.stderr.write(f"threads={args.threads} omp={env.get('OMP_NUM_THREADS')}\n")
    sys.stderr.write(f"seed={json.loads(args.task.read_text())['seed']}\n")
    sys.stderr.flush()
    if env.get("FAKE_TRAINER_IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if pidfile := env.get("FAKE_TRAINER_CHILD_PIDFILE"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        Path(pidfile).write_text(f"{os.getpid()} {child.pid}")
    if args.progress is not None:
        args.progress.write_text("0.5")
    time.sleep(float(env.get("FAKE_TRAINER_SLEEP", "0")))
    code = int(env.get("FAKE_TRAINER_EXIT", "0"))
    if code == 0 and not env.get("FAKE_TRAINER_NO_OUTPUT"):
        shutil.copyfile(args.weights, args.output)
        if args.progress is not None:
            args.progress.write_text("1.0")
    return code


if __name__ == "__main__":
    sys.exit(main())
