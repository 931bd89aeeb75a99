"""`sctk uq train|predict|models` as a user runs them: the real command in a subprocess."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.helpers import run_sctk
from tests.security.conftest import assert_cli_error, sqlite_only
from tests.uq.registry_helpers import frame, import_csv


def _ok(result) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


def test_train_inline_predict_to_files_show_and_delete(settings, tmp_path, sctk_here):
    home = settings.home
    import_csv(settings, frame(100), "runs")
    import_csv(settings, frame(15, seed=4), "fresh")
    config = tmp_path / "model.toml"
    config.write_text("[model]\nepochs = 3\nhidden = [8]\nseed = 1\n", encoding="utf-8")
    out = _ok(
        run_sctk(
            "uq",
            "train",
            "--data",
            "runs",
            "--target",
            "y",
            "--features",
            "a,b",
            "--config",
            str(config),
            "--name",
            "drag",
            "--inline",
            "--json",
            home=home,
        )
    )
    model = json.loads(out)
    assert (model["name"], model["version"]) == ("drag", 1)
    assert model["config"]["epochs"] == 3 and model["config"]["seed"] == 1
    # no --calibration on 100 rows: CV+, every row calibrates (cross-conformal metrics)
    assert model["metrics"]["n_calibration"] == 100
    assert model["metrics"]["calibration_mode"] == "cv+"
    assert model["metrics"]["measured_on"] == "cross-validation"

    csv_out, pq_out = tmp_path / "pred.csv", tmp_path / "pred.parquet"
    text = _ok(
        run_sctk("uq", "predict", "drag", "--data", "fresh", "--out", str(csv_out), home=home)
    )
    assert "predicted 15 rows" in text
    written = pd.read_csv(csv_out)
    assert list(written.columns) == ["a", "b", "mean", "lower", "upper", "sigma", "psi"]
    assert len(written) == 15 and (written["lower"] <= written["upper"]).all()
    _ok(
        sctk_here(
            "uq",
            "predict",
            f"{model['id']}",
            "--data",
            "fresh",
            "--alpha",
            "0.2",
            "--out",
            str(pq_out),
            home=home,
        )
    )
    assert len(pd.read_parquet(pq_out)) == 15
    shown = json.loads(
        _ok(sctk_here("uq", "predict", "drag:1", "--data", "fresh", "--json", home=home))
    )
    assert len(shown["mean"]) == 15 and shown["alpha"] == 0.1
    assert shown["mean"] == pytest.approx(written["mean"].tolist(), rel=1e-9, abs=1e-12)

    listed = json.loads(_ok(sctk_here("uq", "models", "list", "--json", home=home)))
    assert [(m["name"], m["version"]) for m in listed] == [("drag", 1)]
    assert json.loads(_ok(sctk_here("uq", "models", "show", "drag", "--json", home=home)))[
        "lineage"
    ]["features"] == ["a", "b"]
    assert "deleted model 'drag' v1" in _ok(sctk_here("uq", "models", "delete", "drag", home=home))
    assert json.loads(_ok(sctk_here("uq", "models", "list", "--json", home=home))) == []
    assert not (home / "results/models/drag").exists()


@sqlite_only  # refusals happen before the database matters
def test_bad_commands_are_one_sentence_and_change_nothing(settings, tmp_path, sctk_here):
    home = settings.home
    import_csv(settings, frame(60), "runs")
    import_csv(settings, frame(10).rename(columns={"b": "bee"}), "other")
    assert_cli_error(
        sctk_here("uq", "train", "--data", "runs", "--target", "nope", home=home),
        "has no column 'nope'",
    )
    assert_cli_error(
        sctk_here(
            "uq",
            "train",
            "--data",
            "runs",
            "--target",
            "y",
            "--calibration",
            "0.05",
            "--config",
            str(_tiny(tmp_path)),
            "--inline",
            home=home,
        ),
        "too few for intervals",
    )
    assert_cli_error(
        sctk_here("uq", "predict", "ghost", "--data", "runs", home=home), "No model is 'ghost'"
    )
    # a model (trained through the real command), then predictions it must refuse
    _ok(
        run_sctk(
            "uq",
            "train",
            "--data",
            "runs",
            "--target",
            "y",
            "--name",
            "m",
            "--calibration",
            "0.2",
            "--config",
            str(_tiny(tmp_path)),
            "--inline",
            home=home,
        )
    )
    for args, fragment in (
        (("--data", "other"), "lacks the column(s) b"),
        (("--data", "runs", "--alpha", "1.5"), "alpha must lie strictly between 0 and 1"),
        (("--data", "runs", "--alpha", "0.01"), "too few for alpha=0.01"),
        (("--data", "runs", "--out", str(tmp_path / "x.txt")), "use a .csv or .parquet"),
    ):
        assert_cli_error(sctk_here("uq", "predict", "m", *args, home=home), fragment)
    assert not (tmp_path / "x.txt").exists()
    listed = json.loads(_ok(sctk_here("uq", "models", "list", "--json", home=home)))
    assert [(m["name"], m["version"]) for m in listed] == [("m", 1)]


def _tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text("epochs = 2\nhidden = [4]\n", encoding="utf-8")
    return path
