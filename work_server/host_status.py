"""Hosts as the operator API reports them (``GET /api/v1/hosts[/{id}]``): each host's private
record (its name included), its ban and its adaptive-replication trust per runtime.

Operator-only: the public ``ServerStatus`` carries counts, never these rows, so a volunteer's
name is seen by the operators and by the host itself (``HostRecord``) and nobody else."""

from __future__ import annotations

from datetime import datetime

from yadml_common.wire import HostRecord, WireModel

__all__ = ["HostDetail", "HostList", "RuntimeTrust"]


class RuntimeTrust(WireModel):
    """Adaptive-replication state of one (host, runtime) pair (``work_server.services.trust``);
    ``trusted`` at the lowest threshold of the running adaptive jobs, else the default."""

    runtime: str
    consecutive_valid: int
    valid: int
    invalid: int
    error: int
    daily_quota: int
    quota_used_today: int
    trusted: bool


class HostDetail(HostRecord):
    last_contact: datetime
    banned: bool
    consecutive_valid: int
    trust: list[RuntimeTrust]


class HostList(WireModel):
    hosts: list[HostDetail]
