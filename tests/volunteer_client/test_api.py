from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from volunteer_client.api import ServerAPI, _parse_retry_after
from volunteer_client.errors import (
    Forbidden,
    IntegrityError,
    PayloadRejected,
    ProtocolError,
    Rejected,
    TransientError,
    Unauthorized,
)
from yadml_common.wire import HostRegisterRequest, RunningUnit

from .fake_server import FakeWorkServer, grant_for


async def test_register_and_request_work(fake_server: FakeWorkServer, api: ServerAPI) -> None:
    async with ServerAPI(base_url=fake_server.url) as anonymous:
        answer = await anonymous.register(HostRegisterRequest(name="pc", cpus=2))
    assert answer.host_id == 1
    assert fake_server.registered[0].cpus == 2
    unit = fake_server.add_unit(5)
    response = await api.request_work(2, ["process"])
    assert response.units == [unit]
    assert response.retry_after_s == 5.0
    assert fake_server.work_requests[0].max_units == 2


async def test_http_errors_map_to_the_hierarchy(fake_server: FakeWorkServer) -> None:
    async with ServerAPI(base_url=fake_server.url, token="wrong") as bad:
        with pytest.raises(Unauthorized) as info:
            await bad.request_work()
    assert info.value.status == 401
    assert info.value.error == "unauthorized"

    async with ServerAPI(base_url=fake_server.url, token="secret-token") as api:
        fake_server.work_script = [
            (429, "too_many_requests", {"Retry-After": "7"}),
            (503, "unavailable", {}),
            (400, "bad_request", {}),
        ]
        with pytest.raises(TransientError) as transient:
            await api.request_work()
        assert transient.value.retry_after == 7.0
        with pytest.raises(TransientError) as transient:
            await api.request_work()
        assert transient.value.retry_after is None
        with pytest.raises(Rejected) as rejected:
            await api.request_work()
        assert (rejected.value.status, rejected.value.detail) == (400, "scripted")
        fake_server.banned = True
        with pytest.raises(Forbidden):
            await api.heartbeat([])


async def test_unreachable_server_is_transient(dead_url: str) -> None:
    async with ServerAPI(base_url=dead_url, token="t") as api:
        with pytest.raises(TransientError):
            await api.request_work()


async def test_garbled_answer_is_a_protocol_error() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>portal"))
    async with ServerAPI(base_url="http://s", token="t", transport=transport) as api:
        with pytest.raises(ProtocolError):
            await api.request_work()


async def test_token_goes_to_the_server_origin_only(tmp_path: Path) -> None:
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[str(request.url)] = request.headers.get("Authorization")
        return httpx.Response(200, content=b"data")

    sha = hashlib.sha256(b"data").hexdigest()
    transport = httpx.MockTransport(handler)
    async with ServerAPI(base_url="http://s:8080/", token="t", transport=transport) as api:
        await api.download_blob(f"/api/v1/blobs/{sha}", tmp_path / "a", sha)
        await api.download_blob(f"http://cdn.example/{sha}", tmp_path / "b", sha)
    assert seen == {
        f"http://s:8080/api/v1/blobs/{sha}": "Bearer t",
        f"http://cdn.example/{sha}": None,
    }


async def test_download_verifies_sha256(
    fake_server: FakeWorkServer, api: ServerAPI, tmp_path: Path
) -> None:
    sha = fake_server.add_blob(b"x" * 200_000)
    dest = tmp_path / "cache" / sha
    assert await api.download_blob(f"/api/v1/blobs/{sha}", dest, sha, expected_size=200_000)
    assert dest.read_bytes() == b"x" * 200_000

    bad = fake_server.add_blob(b"y" * 1000)
    fake_server.blob_corruption.add(bad)
    with pytest.raises(IntegrityError) as info:
        await api.download_blob(f"{fake_server.url}/api/v1/blobs/{bad}", tmp_path / "c" / bad, bad)
    assert info.value.expected == bad
    assert info.value.actual != bad
    assert list((tmp_path / "c").iterdir()) == []  # no partial or temporary file left

    with pytest.raises(IntegrityError):
        await api.download_blob(f"/api/v1/blobs/{sha}", tmp_path / "d" / sha, sha, expected_size=10)
    assert list((tmp_path / "d").iterdir()) == []

    with pytest.raises(Rejected) as rejected:
        await api.download_blob(f"/api/v1/blobs/{'0' * 64}", tmp_path / "e", "0" * 64)
    assert rejected.value.status == 404


async def test_upload_failure_heartbeat(fake_server: FakeWorkServer, api: ServerAPI) -> None:
    first = await api.upload_result(4, b"weights", grant=grant_for(4))
    again = await api.upload_result(4, b"weights", grant=grant_for(4), url="/api/v1/results/4")
    assert (first.duplicate, again.duplicate) == (False, True)
    assert fake_server.upload_grants == [grant_for(4)] * 2
    with pytest.raises(Forbidden) as no_grant:
        await api.upload_result(4, b"weights", grant=grant_for(5))
    assert no_grant.value.error == "invalid_upload_grant"
    with pytest.raises(Rejected) as conflict:
        await api.upload_result(4, b"other", grant=grant_for(4))
    assert conflict.value.status == 409
    assert not isinstance(conflict.value, PayloadRejected)
    fake_server.upload_script = [(422, "invalid_tensors", {}), (413, "too_large", {})]
    with pytest.raises(PayloadRejected) as invalid:
        await api.upload_result(5, b"bad", grant=grant_for(5))
    assert invalid.value.status == 422
    assert invalid.value.error == "invalid_tensors"
    with pytest.raises(PayloadRejected) as too_large:
        await api.upload_result(5, b"big", grant=grant_for(5))
    assert too_large.value.status == 413

    await api.report_failure(6, "crash", "x" * 20000)
    assert fake_server.failures[6].reason == "crash"
    assert len(fake_server.failures[6].detail) == 16384

    fake_server.abort = {8}
    answer = await api.heartbeat([RunningUnit(result_id=8, fraction_done=0.5)])
    assert answer.abort == [8]
    assert fake_server.heartbeats[0].running[0].fraction_done == 0.5


async def test_upload_sends_the_grant_in_a_header_never_in_the_url(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"result_id": 7, "sha256": "0" * 64, "duplicate": False})

    output = tmp_path / "output.safetensors"
    output.write_bytes(b"result bytes")
    transport = httpx.MockTransport(handler)
    async with ServerAPI(base_url="http://s:8080/", token="t", transport=transport) as api:
        await api.upload_result(7, output, grant="payload.mac", url="/api/v1/results/7")
        await api.upload_result(7, b"result bytes", grant="payload.mac")  # the default URL
    for request in seen:
        assert request.method == "PUT"
        assert str(request.url) == "http://s:8080/api/v1/results/7"
        assert request.url.query == b""
        assert request.headers["X-Upload-Grant"] == "payload.mac"
        assert request.headers["Authorization"] == "Bearer t"
        assert request.content == b"result bytes"
    assert len(seen) == 2


def test_retry_after_parsing() -> None:
    assert _parse_retry_after(None) is None
    assert _parse_retry_after(" 12 ") == 12.0
    assert _parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert _parse_retry_after("soon") is None
