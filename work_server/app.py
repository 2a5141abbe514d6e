"""The application factory: ``create_app(config)`` composes small ``setup_*`` functions,
one ``cleanup_ctx`` generator per resource (database engine, scheduler daemons)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from work_server import keys
from work_server.api import hosts, openapi, operator, operator_access, volunteer
from work_server.api.common import error_middleware
from work_server.blobs import BlobStore
from work_server.config import ServerConfig
from work_server.db.engine import create_schema, make_engine, make_sessionmaker
from work_server.metrics import ServerMetrics
from work_server.ratelimit import RateLimiter
from work_server.services.pacing import PollPacer
from work_server.services.uploads import WeightsSpecCache
from work_server.signing import ProjectSigner, UploadGrants
from work_server.url_credentials import refuse_url_credentials
from work_server.web import setup_web


def setup_storage(app: web.Application) -> None:
    config = app[keys.CONFIG]
    config.state_dir.mkdir(parents=True, exist_ok=True)
    config.runs_dir.mkdir(parents=True, exist_ok=True)
    app[keys.BLOBS] = BlobStore(config.blobs_dir)
    app[keys.WEIGHTS_SPECS] = WeightsSpecCache(app[keys.BLOBS])

    async def database(app: web.Application) -> AsyncIterator[None]:
        engine = make_engine(config.db_url)
        await create_schema(engine)
        app[keys.ENGINE] = engine
        app[keys.SESSIONMAKER] = make_sessionmaker(engine)
        yield
        await engine.dispose()

    app.cleanup_ctx.append(database)


def setup_daemons(app: web.Application) -> None:
    config = app[keys.CONFIG]

    async def daemons(app: web.Application) -> AsyncIterator[None]:
        if not config.run_daemons:
            app[keys.SCHEDULER] = None
            yield
            return
        from work_server.daemons.leader import make_leadership
        from work_server.daemons.roster import DaemonDeps
        from work_server.daemons.scheduler import DaemonScheduler

        scheduler = DaemonScheduler(
            sessionmaker=app[keys.SESSIONMAKER],
            intervals=config.intervals,
            deps=DaemonDeps.from_config(config, blobs=app[keys.BLOBS]),
            # several processes may share the database: only the lock holder runs daemons
            leadership=make_leadership(
                app[keys.ENGINE], lock_file=config.state_dir / "daemons.lock"
            ),
        )
        scheduler.start()
        app[keys.SCHEDULER] = scheduler
        yield
        await scheduler.shutdown()

    app.cleanup_ctx.append(daemons)


def setup_security(app: web.Application) -> None:
    """The work-signing key, the upload-grant secret and the rate limiters."""
    config = app[keys.CONFIG]
    config.state_dir.mkdir(parents=True, exist_ok=True)
    app[keys.SIGNER] = ProjectSigner.load_or_create(config.state_dir, name=config.project_name)
    app[keys.UPLOAD_GRANTS] = UploadGrants.load_or_create(config.state_dir)
    app[keys.RATE_LIMITS] = {
        "register_ip": RateLimiter("registration", config.rate_register_per_ip),
        "work_ip": RateLimiter("work", config.rate_work_per_ip),
        "work_host": RateLimiter("work", config.rate_work_per_host),
    }
    app[keys.POLL_PACER] = PollPacer(
        base_s=config.retry_after_s,
        max_s=max(config.retry_after_s, config.max_retry_after_s),
        idle_polls_per_s=config.idle_polls_per_s,
        active_window_s=config.host_active_window_s,
    )


def setup_metrics(app: web.Application) -> None:
    app[keys.METRICS] = ServerMetrics()


def setup_routes(app: web.Application) -> None:
    app.add_routes(volunteer.routes)
    app.add_routes(operator.routes)
    app.add_routes(operator_access.routes)
    app.add_routes(hosts.routes)
    app.add_routes(openapi.routes)
    app.on_response_prepare.append(volunteer.blob_etag_hook)


def create_app(config: ServerConfig) -> web.Application:
    app = web.Application(
        # credentials never in URLs: refused before any handler, inside the error middleware
        # so the refusal is counted like any other
        middlewares=[error_middleware, refuse_url_credentials],
        client_max_size=config.max_request_bytes,
    )
    app[keys.CONFIG] = config
    setup_metrics(app)
    setup_storage(app)
    setup_security(app)
    setup_daemons(app)
    setup_routes(app)
    setup_web(app)
    return app
