"""Signed work: the client runs only units signed by a pinned project key, and attach pins
the key (checked against ``--fingerprint`` when given). Also HTTPS with a custom CA."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.tlsutil import self_signed
from volunteer_client.api import ServerAPI
from volunteer_client.cli import main
from volunteer_client.daemon import Daemon
from volunteer_client.errors import TransientError
from volunteer_client.state import Attachment, StateDir
from yadml_common.signing import (
    SignatureError,
    WorkVerifier,
    b64encode,
    endorsement_bytes,
    fingerprint,
    manifest_bytes,
    raw_public_key,
    sign_assignment,
)
from yadml_common.wire import ProjectKey, TaskConfig, WorkResponse, WorkUnitAssignment

from .daemon.test_daemon import FakeExecutor, FakeSleep
from .fake_server import TOKEN, FakeWorkServer


def _verifier(fake: FakeWorkServer) -> WorkVerifier:
    return WorkVerifier({fake.fingerprint: fake.key.public_key()})


def _daemon(
    api: ServerAPI, state: StateDir, executor: FakeExecutor, verifier: WorkVerifier
) -> Daemon:
    return Daemon(
        api=api,
        state=state,
        executor=executor,
        sleep=FakeSleep(),
        random_fn=lambda: 1.0,
        verifier=verifier,
    )


def test_manifest_survives_the_wire() -> None:
    fake = FakeWorkServer()
    unit = fake.add_unit(7)
    # what the client parses from the JSON answer verifies like the server's object
    received = WorkResponse.model_validate_json(
        WorkResponse(units=[unit], retry_after_s=1).model_dump_json()
    ).units[0]
    assert manifest_bytes(received) == manifest_bytes(unit)
    _verifier(fake).verify(received)


_TAMPER: dict[str, Callable[[WorkUnitAssignment], WorkUnitAssignment]] = {
    "result_id": lambda unit: unit.model_copy(update={"result_id": 8}),
    "deadline": lambda unit: unit.model_copy(
        update={"deadline": unit.deadline + dt.timedelta(days=1)}
    ),
    "task": lambda unit: unit.model_copy(update={"task": TaskConfig(seed=7, lr=5.0)}),
    "input sha256": lambda unit: unit.model_copy(
        update={"inputs": [unit.inputs[0].model_copy(update={"sha256": "0" * 64}), unit.inputs[1]]}
    ),
    "upload limit": lambda unit: unit.model_copy(
        update={"upload": unit.upload.model_copy(update={"max_bytes": 1 << 40})}
    ),
}


@pytest.mark.parametrize("what", list(_TAMPER))
def test_the_signature_covers_every_field(what: str) -> None:
    fake = FakeWorkServer()
    tampered = _TAMPER[what](fake.add_unit(7))
    with pytest.raises(SignatureError, match="does not match"):
        _verifier(fake).verify(tampered)


async def test_signed_unit_runs(
    fake_server: FakeWorkServer, api: ServerAPI, state: StateDir
) -> None:
    unit = fake_server.add_unit(1)
    executor = FakeExecutor()
    assert await _daemon(api, state, executor, _verifier(fake_server)).run_once() == 1
    assert len(executor.requests) == 1
    assert 1 in fake_server.uploads
    assert unit.signature is not None


@pytest.mark.parametrize("how", ["tampered", "unsigned", "foreign key"])
async def test_bad_signatures_are_refused_and_never_run(
    fake_server: FakeWorkServer, api: ServerAPI, state: StateDir, how: str
) -> None:
    unit = fake_server.add_unit(5, sign=how != "unsigned")
    if how == "tampered":  # a man in the middle raises the learning rate
        fake_server.queue[-1] = unit.model_copy(update={"task": TaskConfig(seed=5, lr=9.0)})
    elif how == "foreign key":
        fake_server.queue[-1] = sign_assignment(unit, Ed25519PrivateKey.generate())
    executor = FakeExecutor()
    assert await _daemon(api, state, executor, _verifier(fake_server)).run_once() == 1
    assert executor.requests == []  # nothing ran
    assert fake_server.uploads == {}
    assert fake_server.failures[5].reason == "invalid_input"
    assert "refused" in fake_server.failures[5].detail
    assert not any(state.cache.root.iterdir())  # nothing downloaded


async def test_rotated_key_endorsed_by_the_pinned_key_is_learned(
    fake_server: FakeWorkServer, api: ServerAPI, state: StateDir
) -> None:
    old = fake_server.key
    state.save_attachment(
        Attachment(
            server_url=fake_server.url,
            host_id=1,
            host_token=TOKEN,
            name="pc",
            project_keys=[b64encode(raw_public_key(old.public_key()))],
        )
    )
    verifier = _verifier(fake_server)
    new = Ed25519PrivateKey.generate()
    new_raw = raw_public_key(new.public_key())
    fake_server.key, fake_server.fingerprint = new, fingerprint(new_raw)
    fake_server.project_keys = [
        ProjectKey(
            fingerprint=fingerprint(new_raw),
            public_key=b64encode(new_raw),
            current=True,
            endorsed_by=fingerprint(old.public_key()),
            endorsement=b64encode(old.sign(endorsement_bytes(new_raw))),
        ),
        ProjectKey(
            fingerprint=fingerprint(old.public_key()),
            public_key=b64encode(raw_public_key(old.public_key())),
            current=False,
        ),
    ]
    fake_server.add_unit(1)
    executor = FakeExecutor()
    assert await _daemon(api, state, executor, verifier).run_once() == 1
    assert len(executor.requests) == 1
    assert b64encode(new_raw) in state.require_attachment().project_keys

    # a key without a valid endorsement is not learned
    rogue = Ed25519PrivateKey.generate()
    rogue_raw = raw_public_key(rogue.public_key())
    fake_server.key = rogue
    fake_server.project_keys.append(
        ProjectKey(
            fingerprint=fingerprint(rogue_raw),
            public_key=b64encode(rogue_raw),
            current=False,
            endorsed_by=fingerprint(old.public_key()),
            endorsement=b64encode(rogue.sign(endorsement_bytes(rogue_raw))),  # self-signed
        )
    )
    fake_server.add_unit(2)
    assert await _daemon(api, state, executor, verifier).run_once() == 1
    assert len(executor.requests) == 1
    assert fake_server.failures[2].reason == "invalid_input"


async def test_attach_pins_the_key_and_checks_the_fingerprint(
    fake_server: FakeWorkServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def cli(state_dir: Path, *args: str) -> int:
        return main(["--state-dir", str(state_dir), *args])

    wrong = fingerprint(raw_public_key(Ed25519PrivateKey.generate().public_key()))
    bad_dir = tmp_path / "bad"
    assert (
        await asyncio.to_thread(cli, bad_dir, "attach", fake_server.url, "--fingerprint", wrong)
        == 1
    )
    assert "refusing to attach" in capsys.readouterr().err
    assert StateDir(bad_dir).load_attachment() is None
    assert fake_server.registered == []

    good_dir = tmp_path / "good"
    args = ("attach", fake_server.url, "--fingerprint", fake_server.fingerprint)
    assert await asyncio.to_thread(cli, good_dir, *args) == 0
    assert "matches --fingerprint" in capsys.readouterr().out
    pinned = StateDir(good_dir).require_attachment().project_keys
    assert WorkVerifier.from_b64(pinned).knows(fake_server.fingerprint)

    tofu_dir = tmp_path / "tofu"
    assert await asyncio.to_thread(cli, tofu_dir, "attach", fake_server.url) == 0
    out = capsys.readouterr().out
    assert fake_server.fingerprint in out
    assert "pinned on first use" in out

    # an attachment without a pinned key (older client) refuses to run unsigned work
    old_dir = tmp_path / "old"
    StateDir(old_dir).save_attachment(
        Attachment(server_url=fake_server.url, host_id=1, host_token=TOKEN, name="old")
    )
    assert await asyncio.to_thread(cli, old_dir, "run", "--once") == 1
    assert "no pinned project key" in capsys.readouterr().err


@pytest.fixture
async def https_server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    cert, key = self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    fake = FakeWorkServer()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}", cert
    finally:
        await runner.cleanup()


async def test_https_with_a_custom_ca(https_server: tuple[str, Path]) -> None:
    url, cert = https_server
    async with ServerAPI(base_url=url, ca_cert=cert, timeout=5.0) as api:
        assert (await api.project()).name == "fake"
    async with ServerAPI(base_url=url, timeout=5.0) as api:  # system CAs: not trusted
        with pytest.raises(TransientError, match="CERTIFICATE_VERIFY_FAILED"):
            await api.project()


def test_unit_model_has_a_signature_field() -> None:
    assert "signature" in WorkUnitAssignment.model_fields
