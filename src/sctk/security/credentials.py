"""Who a request acts for, and a short-lived cache of verified bearer credentials.

Verifying a credential costs a database round trip (and, from the async API, a hop to a
worker thread). For the few seconds a verification is cached, a request skips both. Changes
made through this process (revoking a token, disabling a user, rotating keys) clear the cache
at once; a change made by another process takes effect within `auth_cache_seconds`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from sctk.storage.models import User, utcnow


@dataclass(frozen=True)
class Principal:
    """The signed-in identity a request acts for (not a database row)."""

    id: int
    username: str
    role: str
    via: str  # "token" (personal API token) or "jwt" (login)

    @classmethod
    def of(cls, user: User, via: str) -> Principal:
        return cls(user.id, user.username, user.role, via)


class CredentialCache:
    def __init__(self, ttl_seconds: float, max_entries: int = 10_000):
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(credential: str) -> str:
        # never keep the credential itself in memory longer than the request
        return hashlib.sha256(credential.encode()).hexdigest()

    def get(self, credential: str) -> Principal | None:
        if self.ttl <= 0:
            return None
        key = self._key(credential)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            principal, deadline = entry
            if time.monotonic() >= deadline:
                del self._entries[key]
                return None
            return principal

    def put(self, credential: str, principal: Principal, expires_at: datetime | None) -> None:
        """Remember a verification; never beyond the credential's own expiry."""
        if self.ttl <= 0:
            return
        life = self.ttl
        if expires_at is not None:
            life = min(life, (expires_at - utcnow()).total_seconds())
        if life <= 0:
            return
        with self._lock:
            self._entries[self._key(credential)] = (principal, time.monotonic() + life)
            self._entries.move_to_end(self._key(credential))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
