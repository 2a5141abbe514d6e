"""The spool protocol between an executor and a warm trainer loop (:mod:`yadml_trainer.loop`).

The host and the loop share one directory, ``SPOOL``. For each unit the host makes
``SPOOL/<name>/`` holding the unit's inputs and, written last and atomically,
:data:`REQUEST` (a JSON list of trainer arguments). The loop answers in the same directory
with :data:`LOG` (the trainer's stdout and stderr) and, last, :data:`EXIT` (the exit status as
text). :data:`READY` appears once the loop has imported the trainer; :data:`STOP` asks it to end.
Executors import these names rather than spelling the files again.
"""

from __future__ import annotations

__all__ = ["EXIT", "LOG", "OUTPUT", "PROGRESS", "READY", "REQUEST", "STOP"]

#: Trainer arguments (``--shard S --weights W ...``), a JSON list of strings.
REQUEST = "request.json"
#: The trainer's exit status, written last.
EXIT = "exit"
#: The trainer's stdout and stderr.
LOG = "log"
#: Written by the loop once the trainer is imported.
READY = "ready"
#: Created by the host to end the loop.
STOP = "stop"
#: The output weights inside a unit's spool directory.
OUTPUT = "output.safetensors"
#: The progress file inside a unit's spool directory.
PROGRESS = "progress"
