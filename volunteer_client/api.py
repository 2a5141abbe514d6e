"""``ServerAPI``: the work server's HTTP API over ``httpx.AsyncClient``.

Bodies are the pydantic models of :mod:`yadml_common.wire`. This module is the only
place that sees httpx exceptions and HTTP status codes: they are mapped to
:mod:`volunteer_client.errors` (network errors, 5xx and 429 -> :class:`TransientError`;
401 -> :class:`Unauthorized`, 403 -> :class:`Forbidden`, 413/422 ->
:class:`PayloadRejected`, any other 4xx -> :class:`Rejected`).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from yadml_common.fsutil import atomic_output
from yadml_common.wire import (
    API_PREFIX,
    UPLOAD_GRANT_HEADER,
    ErrorBody,
    FailureReport,
    HeartbeatRequest,
    HeartbeatResponse,
    HostRegisterRequest,
    HostRegisterResponse,
    ProjectInfo,
    RunningUnit,
    Runtime,
    UploadAccepted,
    WorkRequest,
    WorkResponse,
)

from .errors import (
    FailureReason,
    Forbidden,
    IntegrityError,
    PayloadRejected,
    ProtocolError,
    Rejected,
    TransientError,
    Unauthorized,
)

__all__ = ["DEFAULT_TIMEOUT", "ServerAPI", "tls_context"]

M = TypeVar("M", bound=BaseModel)

#: Connect/read/write/pool timeouts (seconds) of every request.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)

_CHUNK = 1 << 16
_MAX_FAILURE_DETAIL = 16384

#: The 4xx statuses with a class of their own; any other 4xx is a plain :class:`Rejected`.
_REJECTIONS: dict[int, type[Rejected]] = {
    401: Unauthorized,
    403: Forbidden,
    413: PayloadRejected,
    422: PayloadRejected,
}


def _parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), ``None`` if absent."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def tls_context(ca_cert: str | Path | None) -> ssl.SSLContext:
    """Certificate verification for HTTPS: the system CAs, or only ``ca_cert`` (PEM) if given.

    Hostname checking and certificate verification are always on.
    """
    if ca_cert is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(ca_cert))


class ServerAPI:
    """Client of one work server. Use as ``async with ServerAPI(...) as api`` or call ``aclose``.

    ``base_url`` is the server URL (``http://host:8080``); API paths are below
    ``/api/v1`` of it. ``token`` (the host token) is sent as a bearer token to the
    server's own origin only, never to absolute input URLs on other hosts.
    ``transport`` replaces the network (``httpx.MockTransport``) in tests. ``ca_cert``
    (PEM) is the only CA an HTTPS server's certificate may chain to (default: system CAs).
    """

    def __init__(
        self,
        *,
        base_url: str,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        user_agent: str = "yadml-client/0.1",
        ca_cert: str | Path | None = None,
    ) -> None:
        self.base_url = httpx.URL(base_url.rstrip("/") + "/")
        self._token = token
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            transport=transport,
            timeout=timeout,
            headers={"User-Agent": user_agent},
            follow_redirects=False,
            verify=tls_context(ca_cert),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------------ plumbing

    def _url(self, url: str) -> httpx.URL:
        """An absolute URL, or one relative to the server URL (``/api/v1/...``)."""
        parsed = httpx.URL(url)
        if parsed.is_absolute_url:
            return parsed
        return self.base_url.join(url.lstrip("/"))

    def _headers(self, url: httpx.URL) -> dict[str, str]:
        same_origin = (url.scheme, url.host, url.port) == (
            self.base_url.scheme,
            self.base_url.host,
            self.base_url.port,
        )
        if self._token is not None and same_origin:
            return {"Authorization": f"Bearer {self._token}"}
        return {}

    @staticmethod
    def _raise_for_status(response: httpx.Response, body: bytes) -> None:
        status = response.status_code
        if status < 400:
            return
        retry_after = _parse_retry_after(response.headers.get("Retry-After"))
        try:
            err = ErrorBody.model_validate_json(body)
            error, detail = err.error, err.detail
        except ValidationError:
            error = response.reason_phrase or "error"
            detail = body[:512].decode("utf-8", "replace")
        if status == 429 or status >= 500:
            raise TransientError(f"HTTP {status} {error}: {detail}", retry_after=retry_after)
        raise _REJECTIONS.get(status, Rejected)(status, error, detail)

    async def _request(
        self,
        method: str,
        url: str,
        *,
        json_body: BaseModel | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> bytes:
        target = self._url(url)
        headers = {**self._headers(target), **(extra_headers or {})}
        data = content
        if json_body is not None:
            data = json_body.model_dump_json().encode()
            content_type = "application/json"
        if content_type is not None:
            headers["Content-Type"] = content_type
        try:
            response = await self._client.request(method, target, content=data, headers=headers)
        except httpx.TransportError as exc:  # connect/read/write errors, timeouts
            raise TransientError(f"{method} {target}: {type(exc).__name__}: {exc}") from exc
        self._raise_for_status(response, response.content)
        return response.content

    @staticmethod
    def _parse(model: type[M], body: bytes) -> M:
        try:
            return model.model_validate_json(body)
        except ValidationError as exc:
            raise ProtocolError(f"unexpected answer, not a {model.__name__}: {exc}") from exc

    # ------------------------------------------------------------------ endpoints

    async def project(self) -> ProjectInfo:
        """``GET /project``: the project's name and public keys (needs no token)."""
        body = await self._request("GET", f"{API_PREFIX}/project")
        return self._parse(ProjectInfo, body)

    async def register(self, request: HostRegisterRequest) -> HostRegisterResponse:
        """``POST /hosts``: a new host id and token (needs no token)."""
        body = await self._request("POST", f"{API_PREFIX}/hosts", json_body=request)
        return self._parse(HostRegisterResponse, body)

    async def request_work(
        self, max_units: int = 1, runtimes: Sequence[Runtime] | None = None
    ) -> WorkResponse:
        """``POST /work``: up to ``max_units`` assignments and the server's polling hint."""
        request = WorkRequest(
            max_units=max_units, runtimes=list(runtimes) if runtimes is not None else None
        )
        body = await self._request("POST", f"{API_PREFIX}/work", json_body=request)
        return self._parse(WorkResponse, body)

    async def download_blob(
        self,
        url: str,
        dest: Path,
        expected_sha256: str,
        *,
        expected_size: int | None = None,
    ) -> Path:
        """Stream ``url`` into ``dest``, verifying its sha256 (and size) before renaming.

        The bytes go to a temporary file next to ``dest``; on any failure it is removed, so
        ``dest`` either holds the verified blob or is untouched. Raises
        :class:`IntegrityError` on a sha256 or size mismatch.
        """
        target = self._url(url)
        with atomic_output(dest) as tmp:
            digest = hashlib.sha256()
            size = 0
            with tmp.open("wb") as out:
                try:
                    async with self._client.stream(
                        "GET", target, headers=self._headers(target)
                    ) as response:
                        if response.status_code >= 400:
                            self._raise_for_status(response, await response.aread())
                        async for chunk in response.aiter_bytes(_CHUNK):
                            size += len(chunk)
                            if expected_size is not None and size > expected_size:
                                raise IntegrityError(
                                    f"{target}: more than the announced {expected_size} bytes",
                                    expected=expected_sha256,
                                )
                            digest.update(chunk)
                            out.write(chunk)
                except httpx.TransportError as exc:
                    raise TransientError(f"GET {target}: {type(exc).__name__}: {exc}") from exc
            actual = digest.hexdigest()
            if actual != expected_sha256:
                raise IntegrityError(
                    f"{target}: sha256 {actual} != expected {expected_sha256}",
                    expected=expected_sha256,
                    actual=actual,
                )
        return dest

    async def upload_result(
        self, result_id: int, data: bytes | Path, *, grant: str, url: str | None = None
    ) -> UploadAccepted:
        """``PUT /results/{id}`` with the output safetensors bytes (idempotent for the same bytes).

        ``grant`` is the assignment's ``upload.grant``, sent as the ``X-Upload-Grant`` header
        (a credential never goes in a URL: URLs end up in logs). ``url`` is the assignment's
        ``upload.url`` when given (absolute or relative).
        """
        # A result file can be hundreds of MB on a slow disk: read it off the event loop.
        content = await asyncio.to_thread(data.read_bytes) if isinstance(data, Path) else data
        body = await self._request(
            "PUT",
            url if url is not None else f"{API_PREFIX}/results/{result_id}",
            content=content,
            content_type="application/octet-stream",
            extra_headers={UPLOAD_GRANT_HEADER: grant},
        )
        return self._parse(UploadAccepted, body)

    async def report_failure(self, result_id: int, reason: FailureReason, detail: str = "") -> None:
        """``POST /results/{id}/failure``; ``detail`` is cut to its last 16 KiB."""
        report = FailureReport(reason=reason, detail=detail[-_MAX_FAILURE_DETAIL:])
        await self._request("POST", f"{API_PREFIX}/results/{result_id}/failure", json_body=report)

    async def heartbeat(self, running: Sequence[RunningUnit]) -> HeartbeatResponse:
        """``POST /hosts/heartbeat``: progress of running units; answers the ones to abort."""
        body = await self._request(
            "POST",
            f"{API_PREFIX}/hosts/heartbeat",
            json_body=HeartbeatRequest(running=list(running)),
        )
        return self._parse(HeartbeatResponse, body)
