"""Bearer tokens: making them, hashing them for storage, reading them from a request.

Host tokens and operators' personal API tokens are 256-bit random strings, so a plain
sha256 is the right storage hash (a slow KDF is for low-entropy passwords); a token is found
by its hash, never compared byte by byte. Who an operator token belongs to, and what it may
do, is ``services.api_tokens`` / ``services.principal``. Tokens are never logged.
"""

from __future__ import annotations

import hashlib
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
