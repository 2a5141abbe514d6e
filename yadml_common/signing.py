"""Ed25519 signatures on work units, shared by the server (signs) and the client (verifies).

The **manifest** of a work unit is every field of its :class:`~yadml_common.wire.WorkUnitAssignment`
except ``signature`` (result id, work unit, job, round, deadline, runtime, image, input
names/sha256s/sizes/URLs, task config, upload URL, grant and byte limit). Its canonical bytes are

    b"yadml-work-manifest-v1\\x00" + JSON(assignment without signature)

with the JSON written by :func:`canonical_json`: the pydantic model dumped in JSON mode,
keys sorted, no spaces, ASCII only. Both sides build it from the same pydantic model, so
a field added to the model is signed automatically. The context prefix keeps a manifest
signature from ever being valid for anything else signed with the same key.

Key fingerprints are ``SHA256:`` + unpadded base64 of sha256(raw 32-byte public key), the
way ``ssh-keygen -l`` prints them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from yadml_common.wire import ProjectKey, WorkSignature, WorkUnitAssignment

__all__ = [
    "ENDORSEMENT_CONTEXT",
    "MANIFEST_CONTEXT",
    "SignatureError",
    "WorkVerifier",
    "b64decode",
    "b64encode",
    "canonical_json",
    "endorsement_bytes",
    "fingerprint",
    "manifest_bytes",
    "public_key_from_b64",
    "raw_public_key",
    "sign_assignment",
]

MANIFEST_CONTEXT = b"yadml-work-manifest-v1\x00"
#: a retiring key signs its successor's raw public key with this prefix (key rotation)
ENDORSEMENT_CONTEXT = b"yadml-key-endorsement-v1\x00"


class SignatureError(ValueError):
    """A missing, malformed, unknown-key or wrong signature; the message says which."""


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise SignatureError(f"not base64: {exc}") from None


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    raw = b64decode(text)
    if len(raw) != 32:
        raise SignatureError(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def fingerprint(key: Ed25519PublicKey | bytes) -> str:
    """``SHA256:<base64 without padding>`` of the raw public key, like OpenSSH."""
    raw = key if isinstance(key, bytes) else raw_public_key(key)
    digest = hashlib.sha256(raw).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def manifest_bytes(assignment: WorkUnitAssignment) -> bytes:
    """The exact bytes a work unit's signature covers (see the module docstring)."""
    body = assignment.model_dump(mode="json", exclude={"signature"})
    return MANIFEST_CONTEXT + canonical_json(body)


def endorsement_bytes(new_public_key_raw: bytes) -> bytes:
    return ENDORSEMENT_CONTEXT + new_public_key_raw


def sign_assignment(assignment: WorkUnitAssignment, key: Ed25519PrivateKey) -> WorkUnitAssignment:
    """A copy of ``assignment`` carrying the signature of its manifest by ``key``."""
    signature = WorkSignature(
        key_fingerprint=fingerprint(key.public_key()),
        value=b64encode(key.sign(manifest_bytes(assignment))),
    )
    return assignment.model_copy(update={"signature": signature})


class WorkVerifier:
    """Verifies work units against the project keys a client pinned (fingerprint -> key)."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        if not keys:
            raise ValueError("a verifier needs at least one pinned key")
        self.keys = dict(keys)

    @classmethod
    def from_b64(cls, public_keys: Iterable[str]) -> WorkVerifier:
        keys = [public_key_from_b64(k) for k in public_keys]
        return cls({fingerprint(k): k for k in keys})

    def knows(self, key_fingerprint: str) -> bool:
        return key_fingerprint in self.keys

    def verify(self, assignment: WorkUnitAssignment) -> None:
        """Raise :class:`SignatureError` unless a pinned key signed this exact manifest."""
        sig = assignment.signature
        if sig is None:
            raise SignatureError("work unit is not signed")
        key = self.keys.get(sig.key_fingerprint)
        if key is None:
            raise SignatureError(
                f"work unit is signed by {sig.key_fingerprint}, which is not a pinned project key"
            )
        try:
            key.verify(b64decode(sig.value), manifest_bytes(assignment))
        except InvalidSignature:
            raise SignatureError(
                "work unit signature does not match its contents (tampered?)"
            ) from None

    def learn(self, entry: ProjectKey) -> bool:
        """Pin ``entry`` if a pinned key endorsed it (key rotation). Returns whether it did."""
        key = public_key_from_b64(entry.public_key)
        fp = fingerprint(key)
        if fp in self.keys:
            return True
        if entry.endorsed_by is None or entry.endorsement is None:
            return False
        endorser = self.keys.get(entry.endorsed_by)
        if endorser is None:
            return False
        try:
            endorser.verify(b64decode(entry.endorsement), endorsement_bytes(raw_public_key(key)))
        except InvalidSignature:
            return False
        self.keys[fp] = key
        return True
