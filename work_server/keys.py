"""Typed application keys: every resource the app holds, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server.blobs import BlobStore
from work_server.config import ServerConfig
from work_server.metrics import ServerMetrics
from work_server.ratelimit import RateLimiter
from work_server.services.pacing import PollPacer
from work_server.services.uploads import WeightsSpecCache
from work_server.signing import ProjectSigner, UploadGrants

if TYPE_CHECKING:
    from work_server.daemons.scheduler import DaemonScheduler

if TYPE_CHECKING:
    pass

CONFIG = web.AppKey("config", ServerConfig)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONMAKER = web.AppKey("sessionmaker", async_sessionmaker[AsyncSession])
BLOBS = web.AppKey("blobs", BlobStore)
METRICS = web.AppKey("metrics", ServerMetrics)
SCHEDULER: web.AppKey[DaemonScheduler | None] = web.AppKey("scheduler")
WEIGHTS_SPECS = web.AppKey("weights_specs", WeightsSpecCache)
SIGNER = web.AppKey("signer", ProjectSigner)
UPLOAD_GRANTS = web.AppKey("upload_grants", UploadGrants)
#: "register_ip", "work_ip", "work_host"
RATE_LIMITS = web.AppKey("rate_limits", dict[str, RateLimiter])
POLL_PACER = web.AppKey("poll_pacer", PollPacer)
