"""The YADML trainer: everything that runs inside an executor on a volunteer's machine.

``python -m yadml_trainer.trainer`` trains one work unit (:mod:`yadml_trainer.trainer`),
``python -m yadml_trainer.loop SPOOL`` serves unit after unit in one warm interpreter
(:mod:`yadml_trainer.loop`, protocol in :mod:`yadml_trainer.spool`). The exit statuses are a
contract with the executors (:mod:`yadml_trainer.exit_status`); the networks a job can train
are in :mod:`yadml_trainer.models`, shared with the server, which builds initial weights and
evaluates with the very same code.

This package is the unit the project ships to volunteers: the worker image, the VM image and
the trainer version (:mod:`yadml_trainer.version`) are derived from its files. It imports the
standard library, numpy, torch, safetensors, pydantic and ``yadml_common``; never
``work_server`` nor ``volunteer_client`` (a lint rule enforces it).
"""
