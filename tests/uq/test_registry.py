"""The model registry: save/load round trips, verified files, training as a job."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from sctk.errors import NotFound, SctkError
from sctk.jobs import queue
from sctk.jobs.kinds import get_kind
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import UqModel
from sctk.uq import prediction, registry, tabular_inputs
from sctk.uq.hybrid import HybridRegressor
from sctk.uq.jobs import train
from tests.uq.registry_helpers import TINY, flip_byte, frame, import_csv, train_params


@pytest.fixture
def engine(settings):
    eng = make_engine(settings)
    yield eng
    eng.dispose()


def _fitted(physics=None) -> tuple[HybridRegressor, np.ndarray]:
    df = frame(100)
    X = df[["a", "b"]].to_numpy()
    cfg = {**TINY, "hidden": tuple(TINY["hidden"])}
    model = HybridRegressor(physics=physics, **cfg).fit(X, df["y"].to_numpy())
    return model, X


class _Ctx:
    job_id = 1
    owner = "ada"

    def __init__(self, home):
        self._home = str(home)
        self.events: list[tuple[float, str]] = []
        self.lines: list[str] = []

    @property
    def home(self) -> str:
        return self._home

    def progress(self, fraction: float, message: str = "") -> None:
        self.events.append((fraction, message))

    def log(self, line: str) -> None:
        self.lines.append(line)


@pytest.mark.parametrize("physics", [None, "tests.uq.physics_examples:sine_of_first"])
def test_save_load_round_trip_gives_identical_predictions(settings, engine, physics):
    model, X = _fitted(physics)
    with session_scope(engine) as s:
        row = registry.save(s, settings.home, model, "rt", lineage={"features": ["a", "b"]})
        assert (row.name, row.version, row.kind) == ("rt", 1, "tabular")
        path = settings.home / row.path
        assert path == settings.home / "results/models/rt/v1/model.pt" and path.exists()
        again = registry.save(s, settings.home, model, "rt")
        assert again.version == 2
        loaded = registry.load(settings.home, registry.resolve(s, "rt:1"))
    want = model.predict_interval(X, alpha=0.2)
    got = loaded.predict_interval(X, alpha=0.2)
    for key in ("mean", "lower", "upper", "sigma", "psi"):
        np.testing.assert_array_equal(got[key], want[key])
    assert loaded.get_params() == model.get_params()
    assert not list(path.parent.glob(".model.*")), "no temporary file is left behind"


def test_a_physics_object_cannot_be_saved(settings, engine):
    model, _ = _fitted(physics=lambda X: np.sin(X[:, 0]))
    with session_scope(engine) as s, pytest.raises(SctkError, match="module:function"):
        registry.save(s, settings.home, model, "objphysics")
    with session_scope(engine) as s:
        assert registry.list_models(s) == []
    assert not (settings.home / "results/models/objphysics").exists()


def test_a_changed_model_file_is_refused(settings, engine):
    model, _ = _fitted()
    with session_scope(engine) as s:
        row = registry.save(s, settings.home, model, "tampered")
        path = settings.home / row.path
        flip_byte(path, -20)
        with pytest.raises(SctkError) as info:
            registry.load(settings.home, row)
    message = info.value.message
    assert "has changed since it was saved" in message and message.endswith(".")
    assert message.count(". ") == 0, "one sentence"


def test_a_loaded_model_is_shared_yet_a_file_changed_later_is_still_refused(settings, engine):
    model, X = _fitted()
    with session_scope(engine) as s:
        row = registry.save(s, settings.home, model, "reused")
        first = registry.load(settings.home, row)
        assert registry.load(settings.home, row) is first  # not unpickled again
        private = registry.load(settings.home, row, private=True)
        assert private is not first  # a caller that changes its model gets its own
        np.testing.assert_array_equal(private.predict(X), first.predict(X))
        path = settings.home / row.path
        flip_byte(path, -20)
        with pytest.raises(SctkError, match="has changed since it was saved"):
            registry.load(settings.home, row)


def test_rows_matrix_matches_the_frame_path_and_names_what_is_wrong():
    df = frame(5)
    rows = df[["a", "b"]].to_dict("records")
    np.testing.assert_array_equal(
        tabular_inputs.rows_matrix(rows, ["b", "a"], "The rows"),
        tabular_inputs.feature_matrix(df, ["b", "a"], "The rows"),
    )
    with pytest.raises(SctkError, match=r"lacks the column\(s\) c the model was trained on"):
        tabular_inputs.rows_matrix(rows, ["a", "c"], "The rows")
    holes = [{"a": 1.0, "b": 2.0}, {"a": None, "b": 1.0}, {"b": 3.0}]
    with pytest.raises(SctkError, match=r"values in column\(s\) a \(first at row 1\)"):
        tabular_inputs.rows_matrix(holes, ["a", "b"], "The rows")
    with pytest.raises(SctkError, match="has no rows"):
        tabular_inputs.rows_matrix([], ["a"], "The rows")


def test_resolve_list_show_and_delete(settings, engine):
    model, _ = _fitted()
    with session_scope(engine) as s:
        v1 = registry.save(s, settings.home, model, "m")
        v2 = registry.save(s, settings.home, model, "m")
        assert registry.resolve(s, "m").id == v2.id
        assert registry.resolve(s, "m:1").id == v1.id
        assert registry.resolve(s, str(v1.id)).id == v1.id
        assert [r.version for r in registry.list_models(s)] == [1, 2]
        for bad in ("nope", "m:7", "999999", "99999999999999"):
            with pytest.raises(NotFound, match="sctk uq models list"):
                registry.resolve(s, bad)
        gone = registry.delete(s, settings.home, "m:2")
        assert gone["version"] == 2
    assert not (settings.home / "results/models/m/v2").exists()
    assert (settings.home / "results/models/m/v1/model.pt").exists()
    with session_scope(engine) as s:
        registry.delete(s, settings.home, "m")
        assert s.scalars(select(UqModel)).all() == []
    assert not (settings.home / "results/models/m").exists()


def test_train_job_on_a_stored_dataset(settings, engine):
    import_csv(settings, frame(120), "runs")
    assert get_kind("uq.train").permission == "models.train"
    ctx = _Ctx(settings.home)
    from sctk.uq.jobs import uq_train

    result = uq_train(train_params(calibration=0.3), ctx)
    model = result["model"]
    assert model["name"] == "drag" and model["version"] == 1
    assert model["lineage"]["features"] == ["a", "b"]  # 'label' is text: left out
    assert model["lineage"]["target"] == "y"
    assert len(model["lineage"]["dataset"]["sha256"]) == 64
    assert model["lineage"]["versions"]["sctk"]
    m = model["metrics"]
    assert m["n_calibration"] == 36 and m["n_train"] == 84
    assert 0.0 <= m["coverage"] <= 1.0 and m["mean_width"] > 0 and m["interval_score"] > 0
    epochs = [msg for _, msg in ctx.events if msg.startswith("epoch ")]
    assert epochs and epochs[0].startswith("epoch 1/3")
    fractions = [f for f, _ in ctx.events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    with session_scope(engine) as s:
        row = registry.resolve(s, "drag")
        out = prediction.predict_frame(s, settings.home, row, frame(7, seed=5), alpha=0.1)
    assert out["rows"] == 7 and len(out["upper"]) == 7
    assert all(
        lo <= mu <= hi for lo, mu, hi in zip(out["lower"], out["mean"], out["upper"], strict=True)
    )


def test_train_with_a_calibration_dataset_and_through_the_queue(settings, engine):
    import_csv(settings, frame(80), "runs")
    import_csv(settings, frame(30, seed=9), "cal")
    with session_scope(engine) as s:
        job = queue.submit(s, "uq.train", train_params(calibration="cal"), owner="t")
        params = job.params
    with session_scope(engine) as s:
        result = train(s, settings.home, params)
    assert result["model"]["lineage"]["calibration"]["dataset"] == "cal"
    assert result["model"]["metrics"]["n_calibration"] == 30


@pytest.mark.parametrize("backend", ["sqlite"])  # refusals: the database does not matter
@pytest.mark.parametrize(
    "params, fragment",
    [
        (train_params(target="nope"), "has no column 'nope'"),
        (train_params(features=["a", "zz"]), "has no column(s) zz"),
        (train_params(dataset="missing"), "No dataset is named 'missing'"),
        (train_params(config={"epochz": 3}), "Unknown model setting(s) epochz"),
        (train_params(calibration=1.5), "between 0 and 1"),
        (train_params(calibration=0.05), "too few for intervals"),
        (train_params(features=["label"]), "not numeric"),
        ({**train_params(), "bogus": 1}, "does not know the parameter(s) bogus"),
    ],
)
def test_bad_train_requests_change_nothing(settings, engine, params, fragment):
    import_csv(settings, frame(100), "runs")
    with session_scope(engine) as s, pytest.raises(SctkError) as info:
        train(s, settings.home, params)
    assert fragment in info.value.message
    with session_scope(engine) as s:
        assert registry.list_models(s) == []
    assert not (settings.home / "results/models/drag").exists()
