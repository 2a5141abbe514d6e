"""The OpenAPI paths of the operator access endpoints (``api.operator_access``): personal
API tokens (admin scope) and the audit log (read scope)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from work_server.access_wire import AuditLog, TokenCreated, TokenCreateRequest, TokenInfo, TokenList
from work_server.api.openapi_parts import (
    ADMIN_AUTH,
    OPERATOR_AUTH,
    id_param,
    json_content,
    json_request,
    operation,
    query_param,
)
from work_server.services.audit import MAX_PAGE

ACCESS_MODELS: list[type[BaseModel]] = [
    TokenCreateRequest,
    TokenCreated,
    TokenInfo,
    TokenList,
    AuditLog,
]


def access_paths(prefix: str) -> dict[str, Any]:
    return {
        f"{prefix}/tokens": {
            "post": operation(
                "Make a personal API token for an operator (the answer shows it, once)",
                ok={"201": json_content(TokenCreated, "Created")},
                errors=("400", "401", "404", "413", "422"),
                body=json_request(TokenCreateRequest),
                security=ADMIN_AUTH,
            ),
            "get": operation(
                "List personal API tokens (never their secrets)",
                ok={"200": json_content(TokenList)},
                errors=("400", "401"),
                security=ADMIN_AUTH,
                params=[
                    query_param(
                        "operator",
                        {"type": "string", "minLength": 1, "maxLength": 64},
                        "only this operator's tokens",
                    )
                ],
            ),
        },
        f"{prefix}/tokens/{{token_id}}": {
            "delete": operation(
                "Revoke a personal API token at once (again: no change)",
                ok={"200": json_content(TokenInfo)},
                errors=("400", "401", "404"),
                security=ADMIN_AUTH,
                params=[id_param("token_id")],
            )
        },
        f"{prefix}/audit": {
            "get": operation(
                "The audit log of operator actions, newest first",
                ok={"200": json_content(AuditLog)},
                errors=("400", "401"),
                security=OPERATOR_AUTH,
                params=[
                    query_param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
                    query_param(
                        "before",
                        {"type": "integer", "minimum": 1, "maximum": 10**18 - 1},
                        "only events older than this id (a page's next_before)",
                    ),
                ],
            )
        },
    }
