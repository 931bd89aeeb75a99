"""Nothing a request names runs as code: physics functions come only from the registry
(sctk's built-ins, installed packages' 'sctk.physics' entry points, [uq] physics_allowed), at
submission over HTTP and the CLI, and when a stored model is loaded; and the size-like model
settings have bounds (sctk.uq.bounds)."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from sctk.storage.engine import session_scope
from sctk.uq import physics_registry, registry
from sctk.uq.hybrid import HybridRegressor
from sctk.uq.jobs import uq_train
from tests.security.conftest import (  # noqa: F401 - fixtures used by name
    GENEROUS_LIMITS,
    accounts,
    assert_cli_error,
    assert_problem,
    engine,
    sqlite_only,
    start_api,
)
from tests.security.conftest import api as api
from tests.uq.registry_helpers import TINY, frame, import_csv

HOSTILE = ("pickle:loads", "os:system", "builtins:eval", "subprocess:getoutput")
REGISTERED = "sctk.uq.flow:coarse_physics"  # a built-in: every refusal offers it


class _Ctx:
    """The JobContext a worker hands a job, for running uq.train in this process."""

    job_id = 1
    owner = "ada"

    def __init__(self, home: Path):
        self.home = str(home)

    def progress(self, fraction: float, message: str = "") -> None:
        pass

    def log(self, line: str) -> None:
        pass


def _jobs(api) -> list:
    return api.http.get("/api/v1/jobs?limit=50", headers=api.headers("admin")).json()


def _refusal(problem: dict, name: str) -> None:
    detail = problem["detail"]
    assert f"The physics '{name}' is not registered" in detail, detail
    assert REGISTERED in detail and "physics_allowed" in detail and "sctk.physics" in detail
    assert detail.endswith(".") and "\n" not in detail


@sqlite_only
def test_hostile_physics_names_are_refused_at_submission_over_http(api):
    import_csv(api.settings, frame(40), "runs")
    h = api.headers("analyst")
    for name in HOSTILE:
        for config in ({"physics": name}, {"kind": "field", "physics": name}):
            body = {"dataset": "runs", "target": "y", "config": config}
            _refusal(
                assert_problem(api.http.post("/api/v1/models", json=body, headers=h), 400), name
            )
        # the generic job route checks a uq.train job's parameters the same way
        job = {
            "kind": "uq.train",
            "params": {"dataset": "runs", "target": "y", "config": {"physics": name}},
        }
        _refusal(assert_problem(api.http.post("/api/v1/jobs", json=job, headers=h), 400), name)
    assert _jobs(api) == [], "nothing was queued"
    # a name is looked up, never imported to see whether it is there
    tripwire = "tests.uq.import_tripwire"
    body = {"dataset": "runs", "target": "y", "config": {"physics": f"{tripwire}:fn"}}
    _refusal(
        assert_problem(api.http.post("/api/v1/models", json=body, headers=h), 400), f"{tripwire}:fn"
    )
    assert tripwire not in sys.modules


@sqlite_only
def test_hostile_physics_names_are_refused_by_the_cli(settings, tmp_path, sctk_here):
    home = settings.home
    import_csv(settings, frame(40), "runs")
    for name in HOSTILE:
        config = tmp_path / "model.toml"
        config.write_text(f'[model]\nphysics = "{name}"\nepochs = 2\n', encoding="utf-8")
        result = sctk_here(
            "uq", "train", "--data", "runs", "--target", "y", "--config", str(config), home=home
        )
        message = assert_cli_error(result, f"The physics '{name}' is not registered")
        assert REGISTERED in message
        params = json.dumps({"dataset": "runs", "target": "y", "config": {"physics": name}})
        result = sctk_here("jobs", "submit", "uq.train", "--params-json", params, home=home)
        assert_cli_error(result, f"The physics '{name}' is not registered")
    result = sctk_here("jobs", "list", "--json", home=home)
    assert result.returncode == 0 and json.loads(result.stdout) == []


@pytest.fixture(scope="module")
def one_feature_model() -> HybridRegressor:
    """A fitted tabular model on one feature, its physics a callable (renamed before saving)."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (80, 1))
    y = np.sin(X[:, 0]) + rng.normal(0, 0.05, 80)
    config = {**TINY, "hidden": tuple(TINY["hidden"])}
    return HybridRegressor(physics=lambda X: np.sin(X[:, 0]), **config).fit(X, y)


def _save_naming(api, model: HybridRegressor, physics: str, name: str) -> int:
    """Store MODEL as NAME with a file whose physics reads PHYSICS, as a file written by
    hand, restored from elsewhere or trained before the registry would."""
    model.physics = physics
    with session_scope(api.engine) as s:
        return registry.save(s, api.settings.home, model, name, lineage={"features": ["a"]}).id


def _pickle_rows(marker: Path) -> list[dict[str, float]]:
    """Rows whose float64 bytes are a pickle that creates MARKER when unpickled: what
    pickle.loads would run if a stored model could name it as its physics."""

    class Opens:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = pickle.dumps(Opens(), protocol=0)  # ASCII: every 8 bytes a finite double
    payload += b" " * (-len(payload) % 8)
    values = np.frombuffer(payload, dtype="<f8")
    assert np.isfinite(values).all()
    return [{"a": float(v)} for v in values]


@sqlite_only
def test_a_stored_model_naming_a_hostile_physics_is_refused_at_load(
    api, one_feature_model, tmp_path
):
    marker = tmp_path / "unpickled"
    rows = _pickle_rows(marker)
    h = api.headers("analyst")
    for i, name in enumerate(HOSTILE):
        model_id = _save_naming(api, one_feature_model, name, f"hostile{i}")
        r = api.http.post(f"/api/v1/models/{model_id}/predict", json={"rows": rows}, headers=h)
        problem = assert_problem(r, 409, f"names the physics '{name}', which is not registered")
        assert REGISTERED in problem["detail"] and "physics_allowed" in problem["detail"]
        assert not marker.exists(), "nothing was unpickled"
    # the CLI's prediction loads the model the same way
    with session_scope(api.engine) as s:
        row = registry.resolve(s, "hostile0")
        with pytest.raises(registry.Conflict, match="'pickle:loads', which is not registered"):
            registry.load(api.settings.home, row)
    assert not marker.exists()


def _train_with(api, physics: str, name: str) -> dict:
    """POST /api/v1/models naming PHYSICS, run the queued job as a worker does; the model."""
    h = api.headers("analyst")
    body = {"dataset": "runs", "target": "y", "features": ["a"], "name": name,
            "config": {**TINY, "physics": physics}, "calibration": 0.3}  # fmt: skip
    r = api.http.post("/api/v1/models", json=body, headers=h)
    assert r.status_code == 202, r.text
    job = api.http.get(f"/api/v1/jobs/{r.json()['job']}", headers=h).json()
    return uq_train(job["params"], _Ctx(api.settings.home))["model"]


def _predicts(api, model_id: int) -> dict:
    rows = [{"a": 0.1 * i} for i in range(4)]
    h = api.headers("analyst")
    r = api.http.post(f"/api/v1/models/{model_id}/predict", json={"rows": rows}, headers=h)
    assert r.status_code == 200, r.text
    return r.json()


@sqlite_only
def test_a_name_the_admin_lists_in_sctk_toml_is_accepted(settings, start_api, accounts):  # noqa: F811
    name = "tests.uq.admin_physics:double_first"
    with pytest.raises(physics_registry.PhysicsNotRegistered):
        physics_registry.check(name)  # not registered until the admin lists it
    _admin_lists(settings, name)
    api = start_api(accounts, **GENEROUS_LIMITS)
    import_csv(api.settings, frame(60), "runs")
    model = _train_with(api, name, "admin-listed")
    assert model["config"]["physics"] == name
    assert _predicts(api, model["id"])["rows"] == 4


def _admin_lists(settings, name: str) -> None:
    """Put NAME in the [uq] physics_allowed of the sctk.toml that `sctk init` wrote."""
    text = settings.config_file.read_text(encoding="utf-8")
    assert "# physics_allowed = []" in text
    text = text.replace("# physics_allowed = []", f'physics_allowed = ["{name}"]')
    settings.config_file.write_text(text, encoding="utf-8")


@sqlite_only
def test_the_cli_accepts_a_name_the_admin_lists(settings, tmp_path, sctk_here):
    name = "tests.uq.admin_physics:double_first"
    home = settings.home
    import_csv(settings, frame(40), "runs")
    config = tmp_path / "model.toml"
    config.write_text(f'[model]\nphysics = "{name}"\nepochs = 2\n', encoding="utf-8")
    args = ("uq", "train", "--data", "runs", "--target", "y", "--config", str(config), "--json")
    assert_cli_error(sctk_here(*args, home=home), f"The physics '{name}' is not registered")
    _admin_lists(settings, name)
    result = sctk_here(*args, home=home)
    assert result.returncode == 0, result.stderr
    params = json.dumps({"dataset": "runs", "target": "y", "config": {"physics": name}})
    result = sctk_here("jobs", "submit", "uq.train", "--params-json", params, home=home)
    assert result.returncode == 0, result.stderr
    jobs = json.loads(sctk_here("jobs", "list", "--json", home=home).stdout)
    assert [j["params"]["config"]["physics"] for j in jobs] == [name, name]


def _installed_package(root: Path) -> None:
    """A package installed at ROOT that declares a physics under the 'sctk.physics' group."""
    (root / "sctk_ep_physics").mkdir(parents=True)
    (root / "sctk_ep_physics" / "__init__.py").write_text(
        "import numpy as np\n\n\ndef halved(X):\n    return 0.5 * np.asarray(X)[:, 0]\n",
        encoding="utf-8",
    )
    info = root / "sctk_ep_physics-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: sctk-ep-physics\nVersion: 0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[sctk.physics]\nhalved = sctk_ep_physics:halved\n", encoding="utf-8"
    )


@sqlite_only
def test_a_function_an_installed_package_declares_is_accepted(api, tmp_path, monkeypatch):
    _installed_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    import_csv(api.settings, frame(60), "runs")
    assert "sctk_ep_physics:halved" in physics_registry.choices()
    model = _train_with(api, "halved", "from-entry-point")  # by its entry point's name
    assert model["config"]["physics"] == "sctk_ep_physics:halved"
    assert _predicts(api, model["id"])["rows"] == 4


F = {"kind": "field"}
# (config, the sentence's start naming field and bound, the value it names)
OUT_OF_BOUNDS = [
    ({"epochs": 10_000_000}, "'epochs' must be a whole number from 1 to 10000", "10000000"),
    ({"batch_size": 0}, "'batch_size' must be a whole number from 1 to 65536", "got 0"),
    (
        {"hidden": [100_000]},
        "Each size in 'hidden' must be a whole number from 1 to 1024",
        "100000",
    ),
    ({"hidden": [8] * 50}, "'hidden' has 50 layers; give 0 to 8 layer sizes", "50"),
    ({"patience": 10**9}, "'patience' must be a whole number from 1 to 10000", "1000000000"),
    ({"threads": 4096}, "'threads' must be a whole number from 1 to 64", "4096"),
    ({**F, "width": 100_000}, "'width' must be a whole number from 1 to 256", "100000"),
    ({**F, "depth": 500}, "'depth' must be a whole number from 1 to 16", "500"),
    ({**F, "epochs": 10**6}, "'epochs' must be a whole number from 1 to 10000", "1000000"),
    ({**F, "batch_size": 10**7}, "'batch_size' must be a whole number from 1 to 65536", "10000000"),
]


@sqlite_only
def test_out_of_bound_model_settings_are_refused_at_submission(api, sctk_here, tmp_path):
    import_csv(api.settings, frame(40), "runs")
    h = api.headers("analyst")
    for config, bound, value in OUT_OF_BOUNDS:
        body = {"dataset": "runs", "target": "y", "config": config}
        problem = assert_problem(api.http.post("/api/v1/models", json=body, headers=h), 400, bound)
        assert value in problem["detail"] and "\n" not in problem["detail"]
        job = {"kind": "uq.train", "params": body}
        assert_problem(api.http.post("/api/v1/jobs", json=job, headers=h), 400, bound)
    assert _jobs(api) == []
    # the CLI refuses the same settings with the same sentence
    config_file = tmp_path / "big.toml"
    config_file.write_text("[model]\nepochs = 10000000\n", encoding="utf-8")
    result = sctk_here(
        "uq", "train", "--data", "runs", "--target", "y", "--config", str(config_file),
        home=api.settings.home,
    )  # fmt: skip
    assert_cli_error(result, OUT_OF_BOUNDS[0][1])


@sqlite_only
def test_the_admin_list_takes_only_module_function_names(settings, monkeypatch):
    from sctk import config
    from sctk.errors import ConfigError

    monkeypatch.setenv("SCTK_UQ__PHYSICS_ALLOWED", '["mypkg.models:drag", "os.system; id"]')
    with pytest.raises(ConfigError, match="'package.module:function' names such as") as info:
        config.load(settings.home)
    assert (
        "'os.system; id'" in info.value.message and "SCTK_UQ__PHYSICS_ALLOWED" in info.value.message
    )
    monkeypatch.setenv("SCTK_UQ__PHYSICS_ALLOWED", '["mypkg.models:drag"]')
    assert config.load(settings.home).settings.uq.physics_allowed == ["mypkg.models:drag"]
