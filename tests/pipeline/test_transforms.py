"""Transforms and expressions: what each step does, and that nothing outside the grammar runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sctk.pipeline.expressions import PipelineError, UnsafeExpression, evaluate
from sctk.pipeline.transforms import parse_pipeline, run
from tests.pipeline.conftest import GOOD, PIPELINE


def sentence(message: str, *fragments: str) -> None:
    assert "\n" not in message and message.endswith("."), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("__import__('os').system('touch {marker}')", "calling '.system' is not allowed"),
        ("__import__('os')", "'__import__' is not"),
        ("open('{marker}', 'w')", "'open' is not an allowed function"),
        ("x1.__class__", "attribute access ('.__class__')"),
        ("x1[0]", "indexing"),
        ("[c for c in x1]", "comprehensions"),
        ("(lambda: 1)()", "calling that is not allowed"),
        ("x1 if y else x2", "where(c, x, y)"),
        ("x1 in y", "'in' and 'is' comparisons"),
        ("sqrt(x=1)", "no keyword arguments"),
        ("x1 @ x2", "MatMult"),
        ("b'bytes'", "not a number, text or true/false"),
        ("x1 + " * 600 + "1", "longer than"),
    ],
)
def test_unsafe_expressions_are_refused_before_anything_runs(tmp_path, expr, why):
    marker = tmp_path / "ran"
    expr = expr.replace("{marker}", str(marker))
    with pytest.raises(UnsafeExpression) as exc:
        evaluate(GOOD, expr)
    sentence(exc.value.message, "is not allowed", why)
    assert not marker.exists()


def test_unsafe_expression_in_a_pipeline_file():
    text = '[[steps]]\nop = "derive"\ncolumn = "z"\nexpr = "__import__(\'os\').system(\'x\')"\n'
    with pytest.raises(PipelineError) as exc:
        parse_pipeline(text, "/p/evil.toml")
    sentence(exc.value.message, "evil.toml: step 1 (derive)", "is not allowed")


def test_allowed_expressions():
    df = pd.DataFrame({"a": [1.0, 4.0, 9.0], "b": [1, 2, 3], "s": ["x", "y", "x"]})
    assert evaluate(df, "sqrt(a) + b * 2").tolist() == [3.0, 6.0, 9.0]
    assert evaluate(df, "0 < b <= 2").tolist() == [True, True, False]
    assert evaluate(df, "s == 'x' and not (a > 5)").tolist() == [True, False, False]
    assert evaluate(df, "where(b > 1, a, -a)").tolist() == [-1.0, 4.0, 9.0]
    assert evaluate(df, "pi").tolist() == [np.pi] * 3
    # numpy scalars: a tower of powers overflows at once instead of running for ages
    with pytest.raises(PipelineError):
        evaluate(df, "9**9**9**9")
    with pytest.raises(PipelineError) as exc:
        evaluate(df, "a + nope")
    sentence(exc.value.message, "'nope', which is not a column", "a, b, s")
    with pytest.raises(PipelineError) as exc:
        evaluate(df, "a + s")
    sentence(exc.value.message, "cannot be evaluated")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[[steps]]\nop = 'sort'\n", "op = 'sort'"),
        ("[[steps]]\nop = 'select'\ncolumns = 'x'\n", "non-empty list of column names"),
        ("[[steps]]\nop = 'select'\ncolumn = ['x']\n", "unknown key 'column'"),
        ("[[steps]]\nop = 'filter'\n", "needs 'expr'"),
        ("[[steps]]\nop = 'filter'\nexpr = 'x >'\n", "is not valid"),
        ("[[steps]]\nop = 'normalise'\ncolumns = ['x']\nmethod = 'rank'\n", "'rank' is unknown"),
        (
            "[[steps]]\nop = 'split'\ntrain = 0.5\ncalibration = 0.2\ntest = 0.2\n",
            "add up to 1",
        ),
        (
            "[[steps]]\nop = 'split'\ntrain = 0.6\ncalibration = 0.2\ntest = 0.2\n"
            "[[steps]]\nop = 'select'\ncolumns = ['x']\n",
            "must be the last step",
        ),
        ("steps = 3\n", "lists no steps"),
        ("[[steps]\n", "not valid TOML"),
        ("format = 'csv'\n[[steps]]\nop = 'select'\ncolumns = ['x']\n", "format 'csv'"),
    ],
)
def test_pipeline_file_errors(text, fragment):
    with pytest.raises(PipelineError) as exc:
        parse_pipeline(text, "/p/p.toml")
    sentence(exc.value.message, "p.toml", fragment)


def test_every_step():
    pipeline = parse_pipeline(PIPELINE, "/p/all.toml")
    outputs, records = run(pipeline, GOOD)
    assert list(outputs) == ["train", "calibration", "test"]
    # filter a > 0 and y < 10 drops the row with x1 = -1: five rows, split by their hash
    sizes = {k: len(v) for k, v in outputs.items()}
    assert sum(sizes.values()) == 5
    together = pd.concat(outputs.values())
    assert sorted(together["y"]) == [3, 4, 6, 7, 8]
    assert list(together.columns) == ["a", "x2", "y", "r"]
    for part in outputs.values():
        assert part["y"].is_monotonic_increasing  # a split keeps the file's order
    # r was derived before scaling: from the raw a and x2
    raw = GOOD[GOOD["x1"] > 0].set_index("y")
    for _, row in together.iterrows():
        source = raw.loc[row["y"]]
        assert row["r"] == pytest.approx(np.hypot(source["x1"], source["x2"]))
    fitted = records[4]["fitted"]
    kept = GOOD[GOOD["x1"] > 0]
    assert fitted["a"]["mean"] == pytest.approx(kept["x1"].mean())
    assert fitted["a"]["std"] == pytest.approx(kept["x1"].std(ddof=0))
    assert together["a"].mean() == pytest.approx(0.0)
    assert records[2]["rows_in"] == 6 and records[2]["rows_out"] == 5
    assert records[5]["rows"] == sizes

    again, _ = run(pipeline, GOOD)
    for key in outputs:
        pd.testing.assert_frame_equal(outputs[key], again[key])


def test_split_by_row_hash_is_seeded_and_independent_of_batches():
    rng = np.random.default_rng(11)
    df = pd.DataFrame({"x": rng.normal(size=2_000), "k": np.arange(2_000)})
    text = "[[steps]]\nop = 'split'\ntrain = 0.6\ncalibration = 0.2\ntest = 0.2\nseed = {}\n"
    whole, records = run(parse_pipeline(text.format(7), "p"), df)
    batched, _ = run(parse_pipeline(text.format(7), "p"), df, batch_rows=37)
    for part in whole:
        pd.testing.assert_frame_equal(whole[part], batched[part])
        assert whole[part]["k"].is_monotonic_increasing
    shares = {k: v / len(df) for k, v in records[0]["rows"].items()}
    assert shares == pytest.approx({"train": 0.6, "calibration": 0.2, "test": 0.2}, abs=0.04)
    other, _ = run(parse_pipeline(text.format(8), "p"), df)
    assert not whole["train"].equals(other["train"])
    # the part of a row follows its values, not its position
    shuffled, _ = run(parse_pipeline(text.format(7), "p"), df.iloc[::-1])
    assert sorted(shuffled["train"]["k"]) == list(whole["train"]["k"])


def test_normalise_fitted_alike_for_any_batching():
    rng = np.random.default_rng(12)
    df = pd.DataFrame({"a": rng.normal(size=2_000) * 1e3 + 1e6, "b": rng.random(2_000)})
    text = (
        "[[steps]]\nop = 'filter'\nexpr = 'b > 0.1'\n[[steps]]\nop = 'normalise'\ncolumns = ['a']\n"
    )
    whole, records = run(parse_pipeline(text, "p"), df)
    for size in (7, 999):
        batched, again = run(parse_pipeline(text, "p"), df, batch_rows=size)
        assert again == records
        pd.testing.assert_frame_equal(whole[""], batched[""], check_exact=True)
    kept = df[df["b"] > 0.1]["a"]
    assert records[1]["fitted"]["a"]["mean"] == pytest.approx(kept.mean(), rel=1e-15)
    assert records[1]["fitted"]["a"]["std"] == pytest.approx(kept.std(ddof=0), rel=1e-9)


def test_minmax_and_step_errors_name_the_step():
    df = pd.DataFrame({"a": [1.0, 3.0], "c": [2.0, 2.0], "s": ["x", "y"]})
    p = parse_pipeline("[[steps]]\nop = 'normalise'\ncolumns = ['a']\nmethod = 'minmax'\n", "p")
    outputs, records = run(p, df)
    assert outputs[""]["a"].tolist() == [0.0, 1.0]
    assert records[0]["fitted"] == {"a": {"min": 1.0, "max": 3.0}}
    for text, fragment in [
        ("[[steps]]\nop = 'normalise'\ncolumns = ['c']\n", "step 1 (normalise): column 'c' is"),
        ("[[steps]]\nop = 'normalise'\ncolumns = ['s']\n", "not numeric"),
        ("[[steps]]\nop = 'select'\ncolumns = ['a', 'zz']\n", "no column 'zz' at this point"),
        ("[[steps]]\nop = 'filter'\nexpr = 'a + 1'\n", "not true/false"),
        ("[[steps]]\nop = 'rename'\ncolumns = { a = 'c' }\n", "'c' already exists"),
    ]:
        with pytest.raises(PipelineError) as exc:
            run(parse_pipeline(text, "p"), df)
        sentence(exc.value.message, fragment)
