"""The prediction cache: LRU and Redis backends, counted hits, invalidation on delete."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sctk import config
from sctk.config import CacheSettings
from sctk.storage.engine import make_engine, session_scope
from sctk.uq import cache, prediction, registry
from sctk.uq.hybrid import HybridRegressor
from tests.uq.registry_helpers import TINY, frame

# Like PostgreSQL: CI sets SCTK_TEST_REDIS_URL, and then an unreachable server fails the
# tests instead of turning them into skips.
REDIS_URL = os.environ.get("SCTK_TEST_REDIS_URL")
# The tests empty that database (FLUSHDB): under pytest-xdist they all run on one worker,
# one at a time, as in a serial run.
pytestmark = pytest.mark.xdist_group("redis")


def _redis_or_skip():
    import redis

    if not REDIS_URL:
        pytest.skip("Redis not configured: set SCTK_TEST_REDIS_URL to run this test")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    client.ping()  # raises, failing the test, when the configured server is down
    return client


@pytest.fixture(params=["local", "redis"])
def backend_cache(request, tmp_path):
    if request.param == "local":
        yield cache.LocalCache(max_entries=100)
        return
    client = _redis_or_skip()
    client.flushdb()
    c = cache.RedisCache(REDIS_URL)
    yield c
    client.flushdb()


def test_lru_evicts_the_least_recently_used():
    c = cache.LocalCache(max_entries=2)
    c.put((1, "a", 0.1), {"v": 1})
    c.put((1, "b", 0.1), {"v": 2})
    assert c.get((1, "a", 0.1)) == {"v": 1}  # a is now the most recent
    c.put((1, "c", 0.1), {"v": 3})
    assert c.get((1, "b", 0.1)) is None
    assert c.get((1, "a", 0.1)) == {"v": 1} and c.get((1, "c", 0.1)) == {"v": 3}
    assert c.stats() == {"backend": "local", "hits": 3, "misses": 1, "entries": 2}


def test_get_cache_picks_the_backend_from_settings():
    assert isinstance(cache.get_cache(CacheSettings()), cache.LocalCache)
    assert cache.get_cache(CacheSettings()) is cache.get_cache(CacheSettings())
    _redis_or_skip()
    assert isinstance(cache.get_cache(CacheSettings(url=REDIS_URL)), cache.RedisCache)


def test_cache_settings_load_from_the_environment(monkeypatch, tmp_path):
    url = "redis://:secret@cache.example:6379/2"
    monkeypatch.setenv("SCTK_CACHE__URL", url)
    monkeypatch.setenv("SCTK_CACHE__MAX_ENTRIES", "7")
    s = config.load(tmp_path / "h").settings
    assert s.cache.url.get_secret_value() == url and s.cache.max_entries == 7
    shown = {key: value for key, value, _ in config.redacted(config.load(tmp_path / "h"))}
    assert shown["cache.url"] == "**********"  # a Redis URL may carry a password


def test_predictions_are_cached_keyed_by_rows_and_alpha_and_dropped_on_delete(
    settings, backend_cache
):
    df = frame(100)
    X = df[["a", "b"]].to_numpy()
    cfg = {**TINY, "hidden": tuple(TINY["hidden"])}
    model = HybridRegressor(**cfg).fit(X, df["y"].to_numpy())
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            row = registry.save(s, settings.home, model, "c", lineage={"features": ["a", "b"]})
            inputs = frame(6, seed=2)
            first = prediction.predict_frame(
                s, settings.home, row, inputs, 0.5, cache=backend_cache
            )
            second = prediction.predict_frame(
                s, settings.home, row, inputs, 0.5, cache=backend_cache
            )
            other_alpha = prediction.predict_frame(
                s, settings.home, row, inputs, 0.4, cache=backend_cache
            )
            changed = inputs.copy()
            changed.loc[0, "a"] += 1e-9
            other_rows = prediction.predict_frame(
                s, settings.home, row, changed, 0.5, cache=backend_cache
            )
            assert (first["cached"], second["cached"]) == (False, True)
            assert other_alpha["cached"] is False and other_rows["cached"] is False
            assert second["mean"] == first["mean"] and second["upper"] == first["upper"]
            np.testing.assert_allclose(
                first["mean"], model.predict(inputs[["a", "b"]].to_numpy()), rtol=1e-12
            )
            stats = backend_cache.stats()
            assert (stats["hits"], stats["misses"]) == (1, 3)
            registry.delete(s, settings.home, row.id, cache=backend_cache)
        assert (
            backend_cache.get(
                (row.id, cache.input_digest(inputs[["a", "b"]].to_numpy(), row.sha256), 0.5)
            )
            is None
        )
    finally:
        engine.dispose()


def test_an_unreachable_redis_is_a_miss_not_a_failure():
    c = cache.RedisCache("redis://127.0.0.1:1/0")
    assert c.get((1, "x", 0.1)) is None
    c.put((1, "x", 0.1), {"v": 1})
    assert c.invalidate(1) == 0
    assert c.stats()["misses"] == 1


def test_stats_sums_the_process_caches():
    c = cache.get_cache(CacheSettings(max_entries=3))
    before = cache.stats()
    c.get((99, "nothing", 0.1))
    after = cache.stats()
    assert after["misses"] == before["misses"] + 1 and after["hits"] == before["hits"]


def test_results_are_stored_as_arrays_and_foreign_bytes_are_refused():
    value = {
        "mean": np.linspace(0, 1, 7),
        "psi": np.ones(3, dtype=np.float32),
        "field": np.arange(12.0).reshape(1, 3, 4),
    }
    back = cache.decode(cache.encode(value))
    assert list(back) == list(value)
    for name, array in value.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        np.testing.assert_array_equal(back[name], array)
    for foreign in (b'{"mean": [1.0]}', b"[]\n" + b"x", cache.encode(value)[:-1]):
        with pytest.raises(ValueError, match="not a cached prediction"):
            cache.decode(foreign)


def test_a_redis_entry_of_another_format_is_a_miss():
    client = _redis_or_skip()
    client.flushdb()
    c = cache.RedisCache(REDIS_URL)
    key = (5, "digest", 0.1)
    client.set(c._name(key), b'{"mean": [1.0, 2.0]}')  # as an older sctk wrote entries
    assert c.get(key) is None and c.stats()["misses"] == 1
    c.put(key, {"mean": np.array([1.0, 2.0])})
    np.testing.assert_array_equal(c.get(key)["mean"], [1.0, 2.0])
    client.flushdb()
