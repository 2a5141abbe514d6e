"""Building blocks of the OpenAPI document (``api.openapi`` assembles it): the error
answers, the security requirements (operator endpoints name the scope they need) and
helpers that make operations, parameters and bodies from the pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from yadml_common import wire as w

ERRORS = {
    "400": "Malformed request (bad JSON, bad id, a credential in the URL)",
    "401": "Missing or invalid token",
    "403": "Forbidden (banned host, not your result, missing/invalid/foreign upload grant, "
    "an operator token without the scope this needs: insufficient_scope)",
    "404": "Not found",
    "409": "Conflict",
    "410": "Gone: no longer wanted, or the upload grant expired",
    "413": "Body too large",
    "422": "Body failed validation",
    "429": "Rate limited: retry after the Retry-After header's seconds",
}

Security = list[dict[str, list[str]]]

HOST_AUTH: Security = [{"hostToken": []}]
#: operator endpoints name the scope they need (OpenAPI 3.1: role names for http schemes)
OPERATOR_AUTH: Security = [{"operatorToken": ["read"]}]
JOBS_AUTH: Security = [{"operatorToken": ["jobs"]}]
HOSTS_AUTH: Security = [{"operatorToken": ["hosts"]}]
ADMIN_AUTH: Security = [{"operatorToken": ["admin"]}]
ANY_AUTH: Security = [{"hostToken": []}, {"operatorToken": ["read"]}]


def schema_ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def json_content(model: type[BaseModel], description: str = "OK") -> dict[str, Any]:
    """A response whose body is ``model`` as JSON."""
    return {
        "description": description,
        "content": {"application/json": {"schema": schema_ref(model)}},
    }


def json_request(model: type[BaseModel]) -> dict[str, Any]:
    """A request body's content: ``model`` as JSON."""
    return {"application/json": {"schema": schema_ref(model)}}


def operation(
    summary: str,
    *,
    ok: dict[str, Any],
    errors: tuple[str, ...] = (),
    body: dict[str, Any] | None = None,
    security: Security | None = None,
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One operation; every error code answers an ``ErrorBody``. An operator endpoint may
    always answer 403 (a token without the scope it needs)."""
    op: dict[str, Any] = {"summary": summary, "responses": dict(ok)}
    for code in errors:
        op["responses"][code] = json_content(w.ErrorBody, ERRORS[code])
        if code == "429":
            op["responses"][code]["headers"] = {
                "Retry-After": {"schema": {"type": "integer", "minimum": 1}, "required": True}
            }
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    op["security"] = security if security is not None else []
    if any("operatorToken" in r for r in op["security"]) and "403" not in op["responses"]:
        op["responses"]["403"] = json_content(w.ErrorBody, ERRORS["403"])
    if params:
        op["parameters"] = params
    return op


def id_param(name: str) -> dict[str, Any]:
    """A path id: 1 to 18 digits (fits a 64-bit integer column)."""
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
    }


def query_param(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    """An optional query parameter."""
    param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        param["description"] = description
    return param
