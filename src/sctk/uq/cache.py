"""The prediction cache: results keyed by (model id, sha256 of the input rows, alpha).

A result is the model's output arrays (mean, lower, upper, sigma, psi), kept as arrays: a
1,000-row result is 40 KB of float64 rather than 160 KB of Python floats, and Redis gets
their raw bytes (`encode`), which cost a small fraction of rendering them as JSON text.

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
Value = dict[str, np.ndarray]
_PREFIX = "sctk:uq:predict"


def encode(value: Value) -> bytes:
    """VALUE's arrays as bytes: a JSON line naming each array's dtype and shape, then the
    arrays' raw bytes in that order."""
    arrays = {name: np.ascontiguousarray(a) for name, a in value.items()}
    header = json.dumps([[name, a.dtype.str, list(a.shape)] for name, a in arrays.items()])
    return b"".join([header.encode(), b"\n", *(a.tobytes() for a in arrays.values())])


def decode(raw: bytes) -> Value:
    """The arrays `encode` wrote; ValueError for bytes it did not write."""
    header, _, body = raw.partition(b"\n")
    try:
        layout = json.loads(header)
        out, offset = {}, 0
        for name, dtype, shape in layout:
            dt = np.dtype(dtype)
            count = int(np.prod(shape, dtype=np.int64))
            out[name] = np.frombuffer(body, dt, count=count, offset=offset).reshape(shape)
            offset += count * dt.itemsize
    except (TypeError, KeyError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"not a cached prediction: {exc}") from None
    if offset != len(body):
        raise ValueError("not a cached prediction: its length does not match its header")
    return out


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
        self._data: OrderedDict[Key, Value] = OrderedDict()

    def get(self, key: Key) -> Value | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
        self._count(value is not None)
        return value

    def put(self, key: Key, value: Value) -> None:
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
    """Entries as `encode`d bytes under sctk:uq:predict:<model id>:<digest>:<alpha>.

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

    def get(self, key: Key) -> Value | None:
        import redis

        try:
            raw = self._redis.get(self._name(key))
        except redis.RedisError as exc:
            log.warning("prediction cache unavailable: %s", exc)
            raw = None
        value = None
        if raw is not None:
            try:
                value = decode(raw)
            except ValueError:  # written by an older sctk: a miss, replaced by the next put
                value = None
        self._count(value is not None)
        return value

    def put(self, key: Key, value: Value) -> None:
        import redis

        try:
            self._redis.set(self._name(key), encode(value))
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
