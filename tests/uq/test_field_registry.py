"""Field models in the registry: saved, verified, loaded, predicted (cached), recalibrated."""

from __future__ import annotations

import numpy as np
import pytest

from sctk.errors import SctkError
from sctk.pipeline import store
from sctk.storage.engine import make_engine, session_scope
from sctk.uq import cache, evaluation, fields, prediction, registry
from sctk.uq.field_hybrid import FieldHybridRegressor
from sctk.uq.flow import FlowProblem, make_pairs
from tests.uq.registry_helpers import flip_byte

SMALL = FlowProblem(n=16, fine=32, fine_steps=32)
LINEAGE = {"input": "x", "target": "y", "shape": [2, 16, 16]}


@pytest.fixture(scope="module")
def flow():
    return make_pairs(30, seed=2, problem=SMALL)


@pytest.fixture(scope="module")
def fitted(flow):
    X, _, Y = flow
    return FieldHybridRegressor(
        physics="tests.uq.physics_examples:small_flow",
        dx=2 * np.pi / 16,
        width=8,
        depth=2,
        epochs=3,
        seed=0,
    ).fit(X[:10], Y[:10], X[10:20], Y[10:20])


@pytest.fixture
def engine(settings):
    eng = make_engine(settings)
    yield eng
    eng.dispose()


def _store_fields(session, home, name, X, Y=None):
    columns = {"x": X} if Y is None else {"x": X, "y": Y}
    out = store.Output(name, fields.to_frame(**columns), "parquet", {})
    return store.store(session, home, [out], "test", "t")[0].dataset


@pytest.mark.parametrize("backend", ["sqlite"])
def test_round_trip_gives_identical_intervals_and_is_verified(settings, engine, flow, fitted):
    X, _, _ = flow
    with session_scope(engine) as s:
        row = registry.save(s, settings.home, fitted, "wind", lineage=LINEAGE)
        assert (row.kind, row.version) == ("field", 1)
        assert row.config["physics"] == "tests.uq.physics_examples:small_flow"
        loaded = registry.load(settings.home, row)
        want, got = fitted.predict_interval(X[20:], 0.2), loaded.predict_interval(X[20:], 0.2)
        for key in ("mean", "lower", "upper", "sigma", "psi"):
            np.testing.assert_array_equal(got[key], want[key])
        assert [m["kind"] for m in map(registry.as_dict, registry.list_models(s))] == ["field"]
        path = settings.home / row.path
        flip_byte(path, -30)
        with pytest.raises(SctkError, match="has changed since it was saved"):
            registry.load(settings.home, row)


def test_predict_from_arrays_and_datasets_cached_and_dropped_on_recalibration(
    settings, engine, flow, fitted
):
    X, _, Y = flow
    local = cache.LocalCache()
    with session_scope(engine) as s:
        row = registry.save(s, settings.home, fitted, "wind", lineage=LINEAGE)
        ds = _store_fields(s, settings.home, "wind-test", X[20:], Y[20:])
        first = prediction.predict(s, settings.home, row, X[20:], 0.1, local)
        again = prediction.predict_frame(
            s, settings.home, row, store.read(settings.home, ds), 0.1, local, "Dataset 'wind-test'"
        )
        assert (first["cached"], again["cached"]) == (False, True)  # same fields, same key
        assert first["shape"] == [2, 16, 16] and len(first["psi"]) == 10
        assert np.asarray(first["upper"]).shape == (10, 2, 16, 16)
        np.testing.assert_allclose(first["mean"], fitted.predict(X[20:]), rtol=1e-12)
        old_sha, old_upper = row.sha256, np.asarray(first["upper"])

        _store_fields(s, settings.home, "wind-recal", X[20:], Y[20:])
        m = evaluation.recalibrate(s, settings.home, "wind", "wind-recal", cache=local)
        assert m["sha256"] != old_sha and m["id"] == row.id and m["version"] == 1
        assert m["lineage"]["calibration"]["dataset"] == "wind-recal"
        assert m["lineage"]["recalibrations"][0]["previous_sha256"] == old_sha
        assert m["metrics"]["n_calibration"] == 10 * 2 * 16 * 16
        assert local.stats()["entries"] == 0  # the model's entries are gone
        row = registry.resolve(s, "wind")
        after = prediction.predict(s, settings.home, row, X[20:], 0.1, local)
        assert after["cached"] is False
        assert not np.array_equal(np.asarray(after["upper"]), old_upper)
        registry.load(settings.home, row)  # the new file matches the new sha256
        assert not list((settings.home / row.path).parent.glob(".*"))


@pytest.mark.parametrize("backend", ["sqlite"])
def test_bad_field_input_is_one_sentence(settings, engine, flow, fitted):
    X, _, Y = flow
    with session_scope(engine) as s:
        row = registry.save(s, settings.home, fitted, "wind", lineage=LINEAGE)
        tab = _store_fields(s, settings.home, "short", X[:2, :, :8, :8])
        _store_fields(s, settings.home, "unlabelled", X[20:])
        cases = [
            (
                lambda: prediction.predict(s, settings.home, row, X[:, :, :8, :8]),
                "shape [2, 8, 8]",
            ),
            (lambda: prediction.predict(s, settings.home, row, X[0]), "[B, C>=2, H, W]"),
            (
                lambda: prediction.predict(
                    s, settings.home, row, np.where(X.max() == X, np.inf, X)
                ),
                "NaN or infinite",
            ),
            (lambda: prediction.predict(s, settings.home, row, X, alpha=1.0), "strictly between"),
            (lambda: prediction.predict(s, settings.home, row, X, 0.0001), "too few for alpha"),
            (lambda: fields.from_json([[[[1.0, 2.0]], [[1.0]]]]), "same length"),
            (lambda: fields.from_json([[1.0, 2.0]]), "4 levels of nesting"),
            (
                lambda: prediction.predict_frame(
                    s, settings.home, row, store.read(settings.home, tab)
                ),
                "holds 128 values, not a field of 512",
            ),
            (
                lambda: evaluation.recalibrate(s, settings.home, "wind", "unlabelled"),
                "has no column 'y'",
            ),
        ]
        for call, fragment in cases:
            with pytest.raises(SctkError) as info:
                call()
            assert fragment in info.value.message, (fragment, info.value.message)
            assert info.value.message.endswith(".")
        assert registry.load(settings.home, row).calibrator_.n == 10 * 512
