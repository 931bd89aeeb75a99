"""The prediction cache: results keyed by (model id, sha256 of the input rows, alpha).

In-process LRU by default; Redis when `[cache] url` is set, so that several API processes
share it. Deleting a model drops its entries. Hits and misses are counted per process
(`stats()`). A Redis that cannot be reached never fails a prediction: the lookup counts as a
miss and the error is logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from sctk.config import CacheSettings

log = logging.getLogger(__name__)

Key = tuple[int, str, float]
_PREFIX = "sctk:uq:predict"


def input_digest(X: np.ndarray, model_sha256: str = "") -> str:
    """sha256 of the rows' float64 bytes and shape (and the model file's own sha256, so that a
    reused model id never answers from another model's entries)."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    digest = hashlib.sha256(f"{model_sha256}:{X.shape}:".encode())
    digest.update(X.tobytes())
    return digest.hexdigest()


class _Counted:
    backend = "none"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _count(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def stats(self) -> dict[str, Any]:
        return {"backend": self.backend, "hits": self.hits, "misses": self.misses}


class LocalCache(_Counted):
    """A thread-safe LRU of at most MAX_ENTRIES results."""

    backend = "local"

    def __init__(self, max_entries: int = 1024):
        super().__init__()
        self.max_entries = max_entries
        self._data: OrderedDict[Key, dict[str, Any]] = OrderedDict()

    def get(self, key: Key) -> dict[str, Any] | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
        self._count(value is not None)
        return value

    def put(self, key: Key, value: dict[str, Any]) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def invalidate(self, model_id: int) -> int:
        with self._lock:
            doomed = [k for k in self._data if k[0] == model_id]
            for k in doomed:
                del self._data[k]
        return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "entries": len(self._data)}


class RedisCache(_Counted):
    """Entries as JSON strings under sctk:uq:predict:<model id>:<digest>:<alpha>.

    Redis's own maxmemory policy bounds its size; max_entries applies to the LRU only."""

    backend = "redis"

    def __init__(self, url: str):
        super().__init__()
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    @staticmethod
    def _name(key: Key) -> str:
        model_id, digest, alpha = key
        return f"{_PREFIX}:{model_id}:{digest}:{alpha!r}"

    def get(self, key: Key) -> dict[str, Any] | None:
        import redis

        try:
            raw = self._redis.get(self._name(key))
        except redis.RedisError as exc:
            log.warning("prediction cache unavailable: %s", exc)
            raw = None
        self._count(raw is not None)
        return json.loads(raw) if raw is not None else None

    def put(self, key: Key, value: dict[str, Any]) -> None:
        import redis

        try:
            self._redis.set(self._name(key), json.dumps(value, separators=(",", ":")))
        except redis.RedisError as exc:
            log.warning("prediction cache unavailable: %s", exc)

    def invalidate(self, model_id: int) -> int:
        import redis

        try:
            names = list(self._redis.scan_iter(match=f"{_PREFIX}:{model_id}:*", count=500))
            if names:
                self._redis.delete(*names)
            return len(names)
        except redis.RedisError as exc:
            log.warning("prediction cache unavailable: %s", exc)
            return 0

    def clear(self) -> None:
        names = list(self._redis.scan_iter(match=f"{_PREFIX}:*", count=500))
        if names:
            self._redis.delete(*names)


_caches: dict[tuple[str | None, int], LocalCache | RedisCache] = {}
_caches_lock = threading.Lock()


def get_cache(settings: CacheSettings) -> LocalCache | RedisCache:
    """The process's cache for SETTINGS (one per distinct configuration)."""
    url = settings.url.get_secret_value() if settings.url is not None else None
    key = (url or None, settings.max_entries)
    with _caches_lock:
        cache = _caches.get(key)
        if cache is None:
            cache = RedisCache(url) if url else LocalCache(settings.max_entries)
            _caches[key] = cache
        return cache


def stats() -> dict[str, Any]:
    """Hits and misses of every cache this process uses, summed, with one entry per backend."""
    per = [c.stats() for c in list(_caches.values())]
    return {
        "hits": sum(s["hits"] for s in per),
        "misses": sum(s["misses"] for s in per),
        "caches": per,
    }
