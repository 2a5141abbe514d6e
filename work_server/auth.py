"""Tokens: random bearer tokens for hosts (stored as sha256) and the operator token.

Host tokens are 256-bit random strings, so a plain sha256 is the right storage hash (a
slow KDF is for low-entropy passwords). Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from aiohttp import web

from work_server.errors import Unauthorized


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    return token.strip()


def check_operator(request: web.Request, operator_token: str) -> None:
    token = bearer_token(request)
    if not hmac.compare_digest(token.encode(), operator_token.encode()):
        raise Unauthorized("invalid operator token")
