"""API keys: minted once (the secret is shown then and never again), stored as a SHA-256, checked per request.

A key reads `kiln_<prefix>_<secret>`: 40 random bytes in all, so a plain SHA-256 is as strong as a
slow password hash would be, and cheap enough to check on every prediction.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict

from services.errors import InvalidInput, NotFound
from services.registry.db import database_unavailable
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


TOKEN = re.compile(r"^kiln_[0-9a-f]{8}_[A-Za-z0-9_-]{43}$")


def key_for_token(token: str, *, uow_factory: UowFactory) -> ApiKey | None:
    if not TOKEN.match(token):  # not one Kiln minted: no query
        return None
    with uow_factory() as uow:
        return uow.keys.active_by_hash(secret_hash(token))


class KeyCache:
    """Tokens seen lately and what they resolved to, for `ttl_s`: a revoked key stops working within it.

    Bounded (least recently used first out). While the registry cannot be reached, a key seen
    before keeps working: an outage should not also stop predictions the API can still serve.
    """

    def __init__(self, uow_factory: UowFactory, ttl_s: float = 5.0, capacity: int = 10_000) -> None:
        self.uow_factory, self.ttl_s, self.capacity = uow_factory, ttl_s, capacity
        self._seen: OrderedDict[str, tuple[float, ApiKey | None]] = OrderedDict()
        self._lock = threading.Lock()

    def fresh(self, token: str) -> tuple[bool, ApiKey | None]:
        """(True, key or None) when the answer is known without a query: a token looked up within `ttl_s`, or
        one that is not a Kiln token at all; (False, None) when it must be looked up."""
        if not TOKEN.match(token):
            return True, None
        cached = self._seen.get(token)
        if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
            return True, cached[1]
        return False, None

    def lookup(self, token: str) -> ApiKey | None:
        """The key, from the registry (blocking: call it off the event loop)."""
        try:
            key = key_for_token(token, uow_factory=self.uow_factory)
        except Exception as exc:
            cached = self._seen.get(token)
            if cached is None or cached[1] is None or not database_unavailable(exc):
                raise
            key = cached[1]  # seen before and the registry is away: trusted for another ttl, not asked again each request
        if TOKEN.match(token):  # only well-formed tokens take a place (junk cannot push real keys out)
            with self._lock:
                self._seen[token] = (time.monotonic(), key)
                self._seen.move_to_end(token)
                while len(self._seen) > self.capacity:
                    self._seen.popitem(last=False)
        return key


def allows(key: ApiKey, scope: str) -> bool:
    return scope in key.scopes or "admin" in key.scopes
