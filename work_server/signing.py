"""The project's keys: the Ed25519 work-signing key and the upload-grant secret.

Files in the state directory (all created mode 0600 on first start):

- ``signing_key.pem``: the current Ed25519 private key (PKCS#8 PEM). It signs every work
  unit's manifest (``yadml_common.signing``); clients pin its public key when they attach.
- ``project_keys.json``: public keys still published after a rotation (for a grace
  period), and the current key's endorsement by the key it replaced.
- ``upload_grant_key``: 32 random bytes (hex) for the HMAC-SHA256 of upload grants.

Rotation (``yadml-server key rotate``) makes a new key, has the old key sign (endorse)
the new public key, keeps the old public key published until ``--grace-days`` have
passed, and needs a server restart. Pinned clients accept the new key by checking the
endorsement with the key they pinned. See SECURITY.md.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from work_server.errors import Forbidden, Gone, PayloadTooLarge
from yadml_common.fsutil import atomic_write
from yadml_common.signing import (
    b64encode,
    endorsement_bytes,
    fingerprint,
    raw_public_key,
    sign_assignment,
)
from yadml_common.wire import ProjectInfo, ProjectKey, WorkUnitAssignment

KEY_FILE = "signing_key.pem"
PUBLISHED_FILE = "project_keys.json"
GRANT_KEY_FILE = "upload_grant_key"


class _Local(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PublishedKey(_Local):
    public_key: str
    retired_at: float
    publish_until: float


class PublishedKeys(_Local):
    retired: list[PublishedKey] = Field(default_factory=list)
    #: the current key's endorsement by its predecessor (after a rotation)
    endorsed_by: str | None = None
    endorsement: str | None = None


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _load_key(path: Path) -> Ed25519PrivateKey:
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def _load_published(state_dir: Path) -> PublishedKeys:
    path = state_dir / PUBLISHED_FILE
    if not path.is_file():
        return PublishedKeys()
    return PublishedKeys.model_validate_json(path.read_bytes())


class ProjectSigner:
    """Signs work units; describes the project's public keys for ``GET /api/v1/project``."""

    def __init__(
        self, key: Ed25519PrivateKey, published: PublishedKeys | None = None, *, name: str = "YADML"
    ) -> None:
        self.key = key
        self.published = published or PublishedKeys()
        self.name = name
        self.fingerprint = fingerprint(key.public_key())

    @classmethod
    def load_or_create(cls, state_dir: Path, *, name: str = "YADML") -> ProjectSigner:
        path = state_dir / KEY_FILE
        if not path.is_file():
            with contextlib.suppress(FileExistsError):  # another process made it first
                atomic_write(path, _pem(Ed25519PrivateKey.generate()), mode=0o600, exclusive=True)
        return cls(_load_key(path), _load_published(state_dir), name=name)

    def sign(self, assignment: WorkUnitAssignment) -> WorkUnitAssignment:
        return sign_assignment(assignment, self.key)

    def project_info(self, now: float) -> ProjectInfo:
        keys = [
            ProjectKey(
                fingerprint=self.fingerprint,
                public_key=b64encode(raw_public_key(self.key.public_key())),
                current=True,
                endorsed_by=self.published.endorsed_by,
                endorsement=self.published.endorsement,
            )
        ]
        for old in self.published.retired:
            if old.publish_until > now:
                raw = base64.b64decode(old.public_key)
                keys.append(
                    ProjectKey(
                        fingerprint=fingerprint(raw), public_key=old.public_key, current=False
                    )
                )
        return ProjectInfo(name=self.name, fingerprint=self.fingerprint, public_keys=keys)


def rotate_key(state_dir: Path, *, grace_days: float, now: float | None = None) -> tuple[str, str]:
    """Replace the signing key; returns (old fingerprint, new fingerprint).

    The old key endorses the new one and stays published for ``grace_days``; the old
    private key is deleted (kept nowhere). The server must be restarted to use the new key.
    """
    now = time.time() if now is None else now
    path = state_dir / KEY_FILE
    old = _load_key(path)
    new = Ed25519PrivateKey.generate()
    new_raw = raw_public_key(new.public_key())
    published = _load_published(state_dir)
    retired = [k for k in published.retired if k.publish_until > now]
    retired.append(
        PublishedKey(
            public_key=b64encode(raw_public_key(old.public_key())),
            retired_at=now,
            publish_until=now + grace_days * 86400.0,
        )
    )
    updated = PublishedKeys(
        retired=retired,
        endorsed_by=fingerprint(old.public_key()),
        endorsement=b64encode(old.sign(endorsement_bytes(new_raw))),
    )
    atomic_write(state_dir / PUBLISHED_FILE, updated.model_dump_json(indent=2), mode=0o600)
    atomic_write(path, _pem(new), mode=0o600)
    return fingerprint(old.public_key()), fingerprint(new_raw)


# --------------------------------------------------------------------------- upload grants


@dataclass(frozen=True)
class UploadGrant:
    """Permission to upload one result: from this host, at most ``max_bytes``, until ``expires``."""

    result_id: int
    host_id: int
    max_bytes: int
    expires: float


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UploadGrants:
    """Issues and checks upload grants: ``base64url(payload JSON) "." base64url(HMAC-SHA256)``.

    The payload is ``{"r": result_id, "h": host_id, "m": max_bytes, "e": expires}``; the
    HMAC key is ``upload_grant_key`` in the state directory. A grant proves the server
    handed this result to this host, so uploads outside one are refused before the body
    is read.
    """

    MAX_TOKEN_LEN = 512

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the upload grant secret must be at least 32 bytes")
        self._secret = secret

    @classmethod
    def load_or_create(cls, state_dir: Path) -> UploadGrants:
        path = state_dir / GRANT_KEY_FILE
        if not path.is_file():
            with contextlib.suppress(FileExistsError):  # another process made it first
                atomic_write(path, secrets.token_hex(32) + "\n", mode=0o600, exclusive=True)
        return cls(bytes.fromhex(path.read_text().strip()))

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(
            self._secret, b"yadml-upload-grant-v1\x00" + payload, hashlib.sha256
        ).digest()

    def issue(self, grant: UploadGrant) -> str:
        payload = json.dumps(
            {
                "r": grant.result_id,
                "h": grant.host_id,
                "m": grant.max_bytes,
                "e": int(grant.expires),
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        return f"{_b64url(payload)}.{_b64url(self._mac(payload))}"

    def parse(self, token: str | None) -> UploadGrant:
        """The grant in ``token``; 403 ``invalid_upload_grant`` if absent, malformed or forged."""
        if not token:
            raise Forbidden(
                "missing upload grant: send the work unit's upload.grant in the "
                "X-Upload-Grant header",
                code="invalid_upload_grant",
            )
        if len(token) > self.MAX_TOKEN_LEN or token.count(".") != 1:
            raise Forbidden("malformed upload grant", code="invalid_upload_grant")
        body, _, mac = token.partition(".")
        try:
            payload, got = _unb64url(body), _unb64url(mac)
        except (binascii.Error, ValueError):
            raise Forbidden("malformed upload grant", code="invalid_upload_grant") from None
        if not hmac.compare_digest(got, self._mac(payload)):
            raise Forbidden("upload grant signature is invalid", code="invalid_upload_grant")
        try:
            data = _GrantPayload.model_validate_json(payload)
        except ValidationError:
            raise Forbidden("malformed upload grant", code="invalid_upload_grant") from None
        return UploadGrant(data.r, data.h, data.m, float(data.e))

    def check(
        self,
        token: str | None,
        *,
        result_id: int,
        host_id: int,
        content_length: int | None,
        now: float,
    ) -> UploadGrant:
        """Everything about an upload that needs no body and no database.

        403 ``invalid_upload_grant`` (absent, malformed, forged), 403 ``foreign_upload_grant``
        (another result or host), 410 ``upload_grant_expired``, 413 when the announced body
        is bigger than the grant allows.
        """
        grant = self.parse(token)
        if grant.result_id != result_id or grant.host_id != host_id:
            raise Forbidden(
                "this upload grant was issued for another result or host",
                code="foreign_upload_grant",
            )
        if now > grant.expires:
            raise Gone("the upload grant has expired", code="upload_grant_expired")
        if content_length is not None and content_length > grant.max_bytes:
            raise PayloadTooLarge(
                f"body of {content_length} bytes exceeds the grant's {grant.max_bytes}"
            )
        return grant


class _GrantPayload(_Local):
    r: int = Field(ge=1)
    h: int = Field(ge=1)
    m: int = Field(ge=1)
    e: int = Field(ge=0)
