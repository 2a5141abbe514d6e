"""Compressed uploads (``update_encoding`` fp16 / int8) through the real API: the unit says
the encoding, a well-formed encoded result is accepted, validated and merged as float32
weights, and every malformed one is refused (422) with the database and blobs unchanged."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load, save
from sqlmodel import col, select

from tests.work_server.api.conftest import (
    Client,
    db_snapshot,
    expect,
    fetch_unit,
    register,
    start_digits_job,
)
from work_server import keys
from work_server.config import ServerConfig
from work_server.daemons import round_closer, transitioner, validator, work_generator
from work_server.db.models import Result, Round, ValidateState, WorkUnit
from work_server.ml.shards import decode_weights
from yadml_common.encoding import SCALE_SUFFIX, encode_update
from yadml_common.wire import REPORT_METADATA_KEY, UpdateEncoding

Arrays = dict[str, np.ndarray[Any, Any]]
REPORT = {"train_loss": 0.5, "samples": 100, "elapsed_s": 1.0, "epochs": 1}


def trained(weights: bytes, step: float) -> tuple[Arrays, Arrays]:
    """(input weights, 'trained' weights): every value moved by ``step`` and a ramp."""
    base = load(weights)
    new = {
        k: (v + step * np.linspace(-1, 1, v.size, dtype=np.float32).reshape(v.shape)).astype(
            np.float32
        )
        for k, v in base.items()
    }
    return base, new


def encoded_result(
    weights: bytes,
    encoding: UpdateEncoding,
    step: float = 0.01,
    change: Callable[[Arrays], object] | None = None,
) -> bytes:
    base, new = trained(weights, step)
    tensors = encode_update(new, base, encoding)
    if change is not None:
        change(tensors)
    return bytes(save(tensors, metadata={REPORT_METADATA_KEY: json.dumps(REPORT)}))


async def test_unit_carries_the_encoding_and_int8_is_merged_as_float32(
    client: Client, config: ServerConfig
) -> None:
    job_id = await start_digits_job(client, shards=2, update_encoding="int8")
    app = client.app
    assert app is not None
    units = []
    for i, step in enumerate((0.01, 0.03)):
        _, token = await register(client, f"h{i}")
        unit = await fetch_unit(client, token)
        assert unit.raw["task"]["update_encoding"] == "int8"
        body = encoded_result(unit.weights, "int8", step)
        assert len(body) < len(unit.weights) / 3  # int8 + scales vs float32
        await expect(
            await client.put(unit.upload_url, data=body, headers=unit.upload_headers(token)), 200
        )
        units.append((unit, step))
    now = time.time()
    async with app[keys.SESSIONMAKER]() as session:
        await transitioner.run_once(session, now)
        assert await validator.run_once(session, now, blobs=app[keys.BLOBS]) == 2
        states = (await session.exec(select(Result.validate_state))).all()
        assert sorted(states) == [ValidateState.valid] * 2
        await transitioner.run_once(session, now)
        await round_closer.run_once(session, now, blobs=app[keys.BLOBS], runs_dir=config.runs_dir)
        await work_generator.run_once(session, now, blobs=app[keys.BLOBS])
        rnd = (
            await session.exec(select(Round).where(Round.job_id == job_id, Round.number == 2))
        ).one()
        sizes = dict(
            (
                await session.exec(
                    select(WorkUnit.id, WorkUnit.num_samples).where(
                        col(WorkUnit.round_id) != rnd.id
                    )
                )
            ).all()
        )
    merged = decode_weights(app[keys.BLOBS].get(rnd.weights_sha256))
    n1, n2 = (sizes[u.raw["workunit_id"]] for u, _ in units)
    base, new1 = trained(units[0][0].weights, 0.01)
    _, new2 = trained(units[0][0].weights, 0.03)
    for name, t in merged.items():
        expected = (n1 * new1[name] + n2 * new2[name]) / (n1 + n2)
        scale = max(np.abs(new1[name] - base[name]).max(), np.abs(new2[name] - base[name]).max())
        # off by at most half a quantisation step of either update
        assert np.abs(t.numpy() - expected).max() <= scale / 127 / 2 + 1e-6, name


def _bad_int8(weights: bytes) -> dict[str, bytes]:
    def put(name: str, value: np.ndarray[Any, Any]) -> Callable[[Arrays], object]:
        return lambda t: t.__setitem__(name, value)

    scale = "conv1.weight" + SCALE_SUFFIX
    return {
        "plain fp32 weights": encoded_result(weights, "fp32"),
        "fp16 instead of int8": encoded_result(weights, "fp16"),
        "missing scale": encoded_result(weights, "int8", change=lambda t: t.pop(scale)),
        "per-tensor scale where per-channel": encoded_result(
            weights, "int8", change=put(scale, np.ones((), np.float32))
        ),
        "int16 values": encoded_result(
            weights,
            "int8",
            change=lambda t: t.__setitem__("fc2.bias", t["fc2.bias"].astype(np.int16)),
        ),
        "negative scale": encoded_result(
            weights, "int8", change=put(scale, -np.ones(6, np.float32))
        ),
        "nan scale": encoded_result(
            weights, "int8", change=put(scale, np.full(6, np.nan, np.float32))
        ),
        "float64 scale": encoded_result(weights, "int8", change=put(scale, np.ones(6))),
    }


@pytest.mark.parametrize("encoding", ["int8", "fp16"])
async def test_malformed_encoded_uploads_are_refused(
    client: Client, config: ServerConfig, encoding: UpdateEncoding
) -> None:
    await start_digits_job(client, update_encoding=encoding)
    _, token = await register(client)
    unit = await fetch_unit(client, token)
    before = db_snapshot(config)
    if encoding == "int8":
        bad = _bad_int8(unit.weights)
    else:
        bad = {
            "plain fp32 weights": encoded_result(unit.weights, "fp32"),
            "int8 instead of fp16": encoded_result(unit.weights, "int8"),
            "inf delta": encoded_result(
                unit.weights, "fp16", change=lambda t: t["fc1.bias"].fill(np.inf)
            ),
        }
    for name, data in bad.items():
        body = await expect(
            await client.put(unit.upload_url, data=data, headers=unit.upload_headers(token)), 422
        )
        assert body["error"] == "invalid_result", (name, body)
        assert db_snapshot(config) == before, f"{name} changed the database or the blobs"
    good = encoded_result(unit.weights, encoding)
    await expect(
        await client.put(unit.upload_url, data=good, headers=unit.upload_headers(token)), 200
    )
