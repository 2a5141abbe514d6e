"""Fuzzing the upload validator (bounded safetensors parser + tensor/report checks).

Property: for ANY bytes, ``validate_result_bytes`` either accepts (returns the training
report) or raises ``InvalidResult`` with a message; never another exception, never a
hang or a huge allocation. Inputs are random bytes, structured mutations of a valid
result, and random headers.

CI runs ``FUZZ_EXAMPLES`` (default 200) examples per target; for a long local run:

    FUZZ_EXAMPLES=100000 .venv/bin/python -m pytest -q \
        tests/work_server/services/test_fuzz_safetensors.py
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from work_server.errors import InvalidResult
from work_server.services import safetensors_check as stc
from work_server.services.uploads import validate_result_bytes

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

EXPECTED: dict[str, tuple[str, tuple[int, ...]]] = {
    "conv.weight": ("F32", (2, 3)),
    "conv.bias": ("F32", (3,)),
}
REPORT = json.dumps({"train_loss": 0.5, "samples": 10, "elapsed_s": 1.0, "epochs": 1})


def build(header: dict[str, Any], data: bytes, *, length: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def valid_parts() -> tuple[dict[str, Any], bytes]:
    header: dict[str, Any] = {"__metadata__": {"report": REPORT}}
    data = b""
    for name, (_dtype, shape) in EXPECTED.items():
        arr = np.full(shape, 0.5, dtype="<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(shape),
            "data_offsets": [len(data), len(data) + len(arr)],
        }
        data += arr
    return header, data


VALID = build(*valid_parts())


def check(body: bytes) -> None:
    """A fuzzed body is either accepted or refused with ``InvalidResult``, never anything else."""
    try:
        report = validate_result_bytes(body, EXPECTED)
    except InvalidResult as exc:
        # PT017 is a false positive here: a fuzzed body may or may not be valid, so
        # pytest.raises cannot express the check, and the else branch covers no exception.
        assert str(exc)  # noqa: PT017  (the refusal says why)
    else:
        assert report.samples >= 1


def test_the_valid_result_is_accepted() -> None:
    assert validate_result_bytes(VALID, EXPECTED).samples == 10


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(body: bytes) -> None:
    check(body)


@FUZZ
@given(st.data())
def test_mutated_valid_result(data: st.DataObject) -> None:
    body = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "length"]))
        if op == "flip" and body:
            i = data.draw(st.integers(0, len(body) - 1))
            body[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            body = body[: data.draw(st.integers(0, len(body)))]
        elif op == "insert":
            i = data.draw(st.integers(0, len(body)))
            body[i:i] = data.draw(st.binary(max_size=64))
        elif op == "length" and len(body) >= 8:
            body[:8] = struct.pack("<Q", data.draw(st.integers(0, 2**64 - 1)))
    check(bytes(body))


_dims = st.lists(st.integers(0, 2**40), max_size=10)
_offsets = st.lists(st.integers(-(2**63), 2**64), min_size=0, max_size=3)
_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8))
_entry = st.one_of(
    st.fixed_dictionaries(
        {
            "dtype": st.sampled_from([*stc.DTYPES, "F8", "OBJ", "", "f32"]),
            "shape": st.one_of(_dims, _json_scalar),
            "data_offsets": st.one_of(_offsets, _json_scalar),
        }
    ),
    _json_scalar,
)


@FUZZ
@given(
    names=st.lists(
        st.one_of(st.sampled_from([*EXPECTED, "__metadata__"]), st.text(max_size=300)),
        max_size=6,
    ),
    entries=st.lists(_entry, min_size=6, max_size=6),
    data=st.binary(max_size=256),
    report=st.one_of(st.just(REPORT), st.text(max_size=32), _json_scalar),
)
def test_random_headers(names: list[str], entries: list[Any], data: bytes, report: Any) -> None:
    header: dict[str, Any] = {"__metadata__": {"report": report}}
    header.update(zip(names, entries, strict=False))
    check(build(header, data))


@FUZZ
@given(
    shape=st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=8),
    dtype=st.sampled_from(sorted(stc.DTYPES)),
    nbytes=st.integers(0, 64),
)
@example(shape=[2**16] * 4, dtype="U8", nbytes=0)  # product 2**64 wrapped to 0 in int64
@example(shape=[0, 2252, 8197, 8361, 7469959], dtype="F64", nbytes=0)  # empty, but numpy-huge
def test_parsed_headers_are_safe_to_view(shape: list[int], dtype: str, nbytes: int) -> None:
    """Whatever parse_header accepts can be viewed as arrays: sizes add up exactly, with
    no integer overflow in shape x dtype (e.g. 8 dims of 2**31 - 1)."""
    body = build(
        {"t": {"dtype": dtype, "shape": shape, "data_offsets": [0, nbytes]}}, b"\0" * nbytes
    )
    try:
        header = stc.parse_header(body)
    except stc.SafetensorsError:
        return
    arr = stc.tensor_array(body, header, "t")
    assert arr.nbytes == nbytes
    assert list(arr.shape) == shape


# ------------------------------------------------------- named malformations, named reasons


def _replace(name: str, **changes: Any) -> bytes:
    header, data = valid_parts()
    header[name] = {**header[name], **changes}
    return build(header, data)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (VALID[:5], "truncated"),
        (VALID[: 8 + 10], "truncated: header runs past"),
        (struct.pack("<Q", 2**62) + VALID[8:], "header length"),
        (struct.pack("<Q", 0) + VALID[8:], "header length"),
        (_replace("conv.bias", data_offsets=[0, 12]), "overlaps"),
        (_replace("conv.bias", dtype="F64", data_offsets=[24, 48]), "data section"),
        (_replace("conv.bias", dtype="I32"), "dtype I32, expected F32"),
        (_replace("conv.bias", dtype="PICKLE"), "unsupported dtype"),
        (_replace("conv.bias", shape=[1, 3]), "shape [1, 3], expected [3]"),
        (_replace("conv.bias", shape=[2**20]), "data_offsets do not match"),
        (_replace("conv.bias", shape=[2**40]), "bad shape"),
        (_replace("conv.bias", data_offsets=[24, 12]), "bad data_offsets"),
        (VALID + b"\x00" * 4, "truncated or padded"),
        (
            build(
                {
                    **valid_parts()[0],
                    "extra": {"dtype": "U8", "shape": [1], "data_offsets": [36, 37]},
                },
                valid_parts()[1] + b"\x00",
            ),
            "unexpected ['extra']",
        ),
        (build({"__metadata__": {"report": REPORT}}, b""), "missing"),
        (build({**valid_parts()[0], "__metadata__": {}}, valid_parts()[1]), "training report"),
        (build(["not", "an", "object"], b""), "not a JSON object"),  # type: ignore[arg-type]
        (struct.pack("<Q", 4) + b"\xff\xfe{}", "not JSON"),
    ],
)
def test_malformed_results_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidResult, match=None) as info:
        validate_result_bytes(body, EXPECTED)
    assert reason in str(info.value)


def test_too_many_tensors_and_long_names() -> None:
    header = {
        f"t{i}": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}
        for i in range(stc.MAX_TENSORS + 1)
    }
    with pytest.raises(InvalidResult, match="more than"):
        validate_result_bytes(build(header, b""), EXPECTED)
    header = {"x" * (stc.MAX_NAME_LEN + 1): {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}}
    with pytest.raises(InvalidResult, match="bad tensor entry"):
        validate_result_bytes(build(header, b""), EXPECTED)
