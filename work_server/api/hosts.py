"""Per-host records: a host reads its own (host token) and sets its public display name,
the operators read every host's.

A volunteer's name is private: these are the only API answers that carry one. The public
``GET /api/v1/status`` holds counts only, and the display names volunteers chose to publish.
"""

from __future__ import annotations

import time

from aiohttp import web

from work_server import keys
from work_server.api.common import int_param, json_body, json_response
from work_server.api.operator_auth import authorize
from work_server.auth import bearer_token
from work_server.host_status import HostList
from work_server.services import host_records, hosts
from work_server.services.hosts import authenticate_host
from work_server.services.principal import Scope
from yadml_common.wire import API_PREFIX, DisplayNameUpdate

routes = web.RouteTableDef()


# before ``/hosts/{host_id}``, which would otherwise take "me" for an id
@routes.get(f"{API_PREFIX}/hosts/me")
async def own_host(request: web.Request) -> web.Response:
    async with request.app[keys.SESSIONMAKER]() as session:
        host = await authenticate_host(session, bearer_token(request), time.time())
        return json_response(host_records.own_record(host))


@routes.patch(f"{API_PREFIX}/hosts/me")
async def set_own_display_name(request: web.Request) -> web.Response:
    """``{"display_name": "..."}`` publishes (or changes) the host's display name; ``null``
    withdraws it. Answers the host's record."""
    body = await json_body(request, DisplayNameUpdate)
    async with request.app[keys.SESSIONMAKER]() as session:
        host = await authenticate_host(session, bearer_token(request), time.time())
        host = await hosts.set_display_name(session, host, body.display_name)
        return json_response(host_records.own_record(host))


@routes.get(f"{API_PREFIX}/hosts")
async def list_hosts(request: web.Request) -> web.Response:
    await authorize(request, Scope.read)
    async with request.app[keys.SESSIONMAKER]() as session:
        details = await host_records.host_details(session, now=time.time())
    return json_response(HostList(hosts=details))


@routes.get(f"{API_PREFIX}/hosts/{{host_id}}")
async def get_host(request: web.Request) -> web.Response:
    await authorize(request, Scope.read)
    host_id = int_param(request, "host_id")
    async with request.app[keys.SESSIONMAKER]() as session:
        return json_response(await host_records.host_detail(session, host_id, now=time.time()))
