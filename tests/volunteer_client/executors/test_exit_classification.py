"""``classify_exit``: how every executor turns the end of a trainer run into a failure reason."""

from __future__ import annotations

import signal

import pytest

from volunteer_client.executors.base import OOM_MARKERS, classify_exit
from yadml_trainer.exit_status import EXIT_ERROR, EXIT_INVALID_INPUT, EXIT_OK


def test_status_0_with_output_is_success() -> None:
    assert classify_exit(EXIT_OK, log_tail="fine") is None


def test_status_0_without_output_is_a_crash() -> None:
    failure = classify_exit(EXIT_OK, output_written=False, log_tail="log")
    assert failure is not None
    assert failure.reason == "crash"
    assert failure.detail == "exit 0 but no output file\nlog"
    failure = classify_exit(EXIT_OK, output_written=False, context="no exit file")
    assert failure is not None
    assert failure.detail.startswith("no exit file: exit 0 but no")


def test_time_limit_wins_over_everything() -> None:
    failure = classify_exit(EXIT_OK, timed_out=True, time_limit_s=3, log_tail="sleeping")
    assert failure is not None
    assert failure.reason == "timeout"
    assert failure.detail == "killed after the time limit of 3.0 s\nsleeping"


def test_invalid_input_and_plain_errors() -> None:
    failure = classify_exit(EXIT_INVALID_INPUT, log_tail="bad shard")
    assert failure is not None
    assert (failure.reason, failure.detail) == (
        "invalid_input",
        "bad shard",
    )
    failure = classify_exit(EXIT_ERROR, log_tail="boom")
    assert failure is not None
    assert failure.reason == "crash"
    assert failure.detail == "exit status 1\nboom"


@pytest.mark.parametrize(
    "log",
    [
        "trainer: MemoryError: ",
        "RuntimeError: DefaultCPUAllocator: can't allocate memory (Cannot allocate memory)",
        "[   12.3] Out of memory: Killed process 81 (python3)",
        "[   12.3] python3 invoked oom-killer: oom-kill:constraint=CONSTRAINT_NONE",
        "CUDA out of memory",
    ],
)
def test_a_memory_error_in_the_log_is_out_of_memory(log: str) -> None:
    failure = classify_exit(EXIT_ERROR, log_tail=log)
    assert failure is not None
    assert failure.reason == "out_of_memory"
    failure = classify_exit(None, log_tail=log)  # no status at all (the VM's guest died)
    assert failure is not None
    assert failure.reason == "out_of_memory"


def test_the_trainers_invalid_input_verdict_beats_a_memory_word_in_its_log() -> None:
    failure = classify_exit(EXIT_INVALID_INPUT, log_tail="task: 'out of memory' is no model")
    assert failure is not None
    assert failure.reason == "invalid_input"


def test_the_oom_killer_flag_beats_every_status_but_success() -> None:
    for status in (EXIT_INVALID_INPUT, EXIT_ERROR, 137, None):
        failure = classify_exit(status, oom_killed=True, memory_limit_mb=96)
        assert failure is not None
        assert failure.reason == "out_of_memory"
        assert "at the 96 MB limit" in failure.detail
    assert classify_exit(EXIT_OK, oom_killed=True) is None  # a child died, the unit did not


def test_a_signal_alone_is_a_crash_named_by_its_signal() -> None:
    failure = classify_exit(None, signal=signal.SIGKILL, log_tail="tail")
    assert failure is not None
    assert failure.reason == "crash"
    assert failure.detail == "killed by SIGKILL\ntail"
    failure = classify_exit(None, signal=200)
    assert failure is not None
    assert "killed by 200" in failure.detail
    failure = classify_exit(None, signal=signal.SIGKILL, context="the warm trainer died")
    assert failure is not None
    assert failure.detail.startswith("the warm trainer died: killed by")


def test_no_status_no_signal_says_so() -> None:
    failure = classify_exit(None)
    assert failure is not None
    assert (failure.reason, failure.detail) == ("crash", "no exit status\n")
    failure = classify_exit(None, context="the warm trainer exited while starting")
    assert failure is not None
    assert failure.detail == "the warm trainer exited while starting\n"


def test_markers_cover_the_three_executors_words() -> None:
    # process (Python, PyTorch), Docker (same), VM (the guest kernel's console)
    assert {"MemoryError", "Cannot allocate memory", "out of memory", "oom-kill"} <= set(
        OOM_MARKERS
    )
