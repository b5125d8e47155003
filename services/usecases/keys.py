"""API keys: minted once (the secret is shown then and never again), stored as a SHA-256, checked per request.

A key reads `kiln_<prefix>_<secret>`: 40 random bytes in all, so a plain SHA-256 is as strong as a
slow password hash would be, and cheap enough to check on every prediction.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

from services.errors import InvalidInput, NotFound
from services.registry.entities import ApiKey
from services.usecases.jobs import UowFactory

SCOPES = ("read", "predict", "train", "admin")  # admin grants every other scope too
PREFIX = "kiln_"


def secret_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_scopes(text: str) -> list[str]:
    """`read,predict` -> ["read", "predict"], refusing unknown or no scopes."""
    scopes = {s.strip() for s in text.split(",") if s.strip()}
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise InvalidInput(f"scopes: expected a comma-separated list of {', '.join(SCOPES)}; got {text!r}", field="scopes")
    return [s for s in SCOPES if s in scopes]


def create_key(*, name: str, scopes: list[str], uow_factory: UowFactory) -> tuple[ApiKey, str]:
    """A new key with `scopes`; returns it and its token, which is not stored anywhere."""
    if not scopes or any(s not in SCOPES for s in scopes):
        raise InvalidInput(f"scopes: expected some of {', '.join(SCOPES)}", field="scopes")
    prefix = secrets.token_hex(4)
    token = f"{PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    with uow_factory() as uow:
        key = uow.keys.add(key_id=uuid.uuid4(), name=name, prefix=prefix, secret_sha256=secret_hash(token), scopes=scopes)
        uow.commit()
    return key, token


def revoke_key(key_id: uuid.UUID, *, uow_factory: UowFactory) -> None:
    with uow_factory() as uow:
        if not uow.keys.revoke(key_id):
            raise NotFound(f"no active key {key_id}", field="key_id")
        uow.commit()


def list_keys(*, uow_factory: UowFactory) -> list[ApiKey]:
    with uow_factory() as uow:
        return uow.keys.all()


def key_for_token(token: str, *, uow_factory: UowFactory) -> ApiKey | None:
    if not token.startswith(PREFIX):
        return None
    with uow_factory() as uow:
        return uow.keys.active_by_hash(secret_hash(token))


@dataclass
class KeyCache:
    """Tokens seen lately and what they resolved to, for `ttl_s`: a revoked key stops working within it."""

    uow_factory: UowFactory
    ttl_s: float = 5.0

    def __post_init__(self) -> None:
        self._seen: dict[str, tuple[float, ApiKey | None]] = {}

    def lookup(self, token: str) -> ApiKey | None:
        now = time.monotonic()
        cached = self._seen.get(token)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        key = key_for_token(token, uow_factory=self.uow_factory)
        if len(self._seen) > 10_000:  # many wrong tokens: forget them all rather than grow
            self._seen.clear()
        self._seen[token] = (now, key)
        return key


def allows(key: ApiKey, scope: str) -> bool:
    return scope in key.scopes or "admin" in key.scopes
