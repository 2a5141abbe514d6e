"""The operator API calls the demo makes."""

from __future__ import annotations

from typing import Any

import httpx
import pydantic

from work_server.demo.options import DemoError
from work_server.host_status import HostList
from work_server.job_spec import JobSpec
from work_server.job_status import JobStatus
from yadml_common.wire import API_PREFIX, ServerStatus


def submit_job(http: httpx.Client, spec: JobSpec) -> int:
    resp = http.post(f"{API_PREFIX}/jobs", json=spec.model_dump(mode="json"))
    if resp.status_code >= 400:
        raise DemoError(f"POST {API_PREFIX}/jobs: HTTP {resp.status_code}: {resp.text}")
    body: Any = resp.json()
    try:
        return int(body["id"])
    except (TypeError, KeyError, ValueError):
        raise DemoError(f"POST {API_PREFIX}/jobs answered without a job id: {body!r}") from None


def get_job(http: httpx.Client, job_id: int) -> JobStatus:
    resp = http.get(f"{API_PREFIX}/jobs/{job_id}")
    if resp.status_code >= 400:
        raise DemoError(f"GET {API_PREFIX}/jobs/{job_id}: HTTP {resp.status_code}: {resp.text}")
    return JobStatus.model_validate_json(resp.content)


def get_server_status(http: httpx.Client) -> ServerStatus | None:
    """Only for the progress display: ``None`` on any problem."""
    try:
        resp = http.get(f"{API_PREFIX}/status")
        if resp.status_code != 200:
            return None
        return ServerStatus.model_validate_json(resp.content)
    except (httpx.HTTPError, pydantic.ValidationError):
        return None


def get_hosts(http: httpx.Client) -> HostList | None:
    """Every host with its trust (operator token), for the final table: ``None`` on any
    problem."""
    try:
        resp = http.get(f"{API_PREFIX}/hosts")
        if resp.status_code != 200:
            return None
        return HostList.model_validate_json(resp.content)
    except (httpx.HTTPError, pydantic.ValidationError):
        return None
