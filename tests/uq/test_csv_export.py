"""CSV written for a user never holds a cell a spreadsheet would run as a formula."""

from __future__ import annotations

import csv

import pandas as pd

from sctk.security.spreadsheet import escape_cell, escape_frame
from tests.security.conftest import sqlite_only
from tests.uq.registry_helpers import frame, import_csv

FORMULA = "=cmd|' /C calc'!A0"  # no comma: --features separates names by commas


def test_cells_and_names_starting_a_formula_are_quoted_and_numbers_are_not():
    df = pd.DataFrame(
        {
            "=cmd|' /C calc'!A0": ["=1+2", "+SUM(A1)", "-2+3", "@A1", "\tx", "plain"],
            "n": [-1.5, 2.0, 3.0, 4.0, 5.0, 6.0],
            "ok": pd.Series(["a", None, "b", "c", "d", "e"], dtype="str"),
        }
    )
    out = escape_frame(df)
    assert list(out.columns) == ["'=cmd|' /C calc'!A0", "n", "ok"]
    assert out.iloc[:, 0].tolist() == ["'=1+2", "'+SUM(A1)", "'-2+3", "'@A1", "'\tx", "plain"]
    assert out["n"].tolist() == [-1.5, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert pd.isna(out["ok"].iloc[1]) and out["ok"].iloc[0] == "a"
    assert list(df.columns)[0].startswith("=")  # the caller's frame is left as it was
    assert escape_cell(-3) == -3 and escape_cell("x=1") == "x=1"


@sqlite_only
def test_uq_predict_out_csv_escapes_formula_column_names(settings, tmp_path, sctk_here):
    home = settings.home
    names = {"a": FORMULA, "b": "@b"}
    import_csv(settings, frame(60).rename(columns=names), "runs")
    config = tmp_path / "tiny.toml"
    config.write_text("epochs = 2\nhidden = [4]\n", encoding="utf-8")
    trained = sctk_here(
        "uq", "train", "--data", "runs", "--target", "y", "--features", f"{FORMULA},@b",
        "--name", "m", "--calibration", "0.3", "--config", str(config), "--inline", home=home,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    out = tmp_path / "pred.csv"
    ran = sctk_here("uq", "predict", "m", "--data", "runs", "--out", str(out), home=home)
    assert ran.returncode == 0, ran.stderr
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:2] == ["'" + FORMULA, "'@b"]
    cells = [c for row in rows for c in row]
    assert not any(c.startswith(("=", "+", "@")) for c in cells), rows[0]
    # numbers are values, not formulas: a negative one keeps its sign
    assert any(c.startswith("-") and float(c) < 0 for row in rows[1:] for c in row)
