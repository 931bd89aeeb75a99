"""Schemas: a bad schema file is one sentence; validation names every violation by row and
column."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from sctk.pipeline.schema import SchemaError, load_schema, parse_schema, validate
from tests.pipeline.conftest import SCHEMA


def csv(text: str, schema) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), dtype={c: "str" for c in schema.columns})


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('[columns.x]\ndtype = "float"\nmin = \n', ["s.toml is not valid TOML", "line 3"]),
        ('[columns.x]\ndtype = "double"\n', ["column 'x'", "unknown dtype 'double'"]),
        ('[columns.x]\ndtype = "float"\nmaximum = 3\n', ["unknown key 'maximum'", "'max'"]),
        ('[columns.x]\ndtype = "int"\nmin = 5\nmax = 1\n', ["min 5 greater than max 1"]),
        ('[columns.x]\ndtype = "str"\nmin = 1\n', ["applies only to float, int and datetime"]),
        ('[columns.x]\ndtype = "float"\nmin = "low"\n', ["min = 'low'", "not a number"]),
        ('[columns.x]\ndtype = "float"\nnullable = "yes"\n', ["nullable = 'yes'"]),
        ("[columns.x]\nmin = 1\n", ["column 'x' has no dtype"]),
        ('extra_columns = "drop"\n[columns.x]\ndtype = "int"\n', ["extra_columns = 'drop'"]),
        ('version = 2\n[columns.x]\ndtype = "int"\n', ["unknown top-level key 'version'"]),
        ("# nothing\n", ["declares no columns"]),
    ],
)
def test_schema_errors_are_one_sentence(text, fragments):
    with pytest.raises(SchemaError) as exc:
        parse_schema(text, "s.toml")
    message = exc.value.message
    assert "\n" not in message and message.endswith((".", "?")), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_schema_file_missing(tmp_path):
    with pytest.raises(SchemaError, match="does not exist"):
        load_schema(tmp_path / "nope.toml")


def test_wrong_type_out_of_range_and_missing_column_are_named():
    schema = parse_schema(SCHEMA, "s.toml")
    df = csv("x1,y,site\n1.5,1,a\nabc,2,b\n12.5,3,c\n", schema)
    report = validate(df, schema)
    assert not report.ok and report.frame is None
    listed = [str(v) for v in report.violations]
    assert listed == [
        "column 'x2' is missing (the schema requires a float)",
        "row 2, column 'x1': 'abc' is not a number",
        "row 3, column 'x1': 12.5 is above the maximum 10",
    ]
    sentence = report.summary("bad.csv")
    assert sentence.startswith("bad.csv does not match the schema (3 problems): ")
    assert "\n" not in sentence and sentence.endswith("nothing was stored.")


def test_nulls_duplicates_whole_numbers_bools_and_times():
    schema = parse_schema(
        """
        [columns.n]
        dtype = "int"
        unique = true
        [columns.flag]
        dtype = "bool"
        nullable = true
        [columns.at]
        dtype = "datetime"
        min = 2024-01-01T00:00:00Z
        [columns.label]
        dtype = "str"
        """,
        "s.toml",
    )
    df = csv(
        "n,flag,at,label\n"
        "1,yes,2024-02-01,a\n"
        "2,,2024-02-02T10:00:00+02:00,b\n"
        "1,maybe,2023-12-31,\n"
        "2.5,0,soon,d\n",
        schema,
    )
    report = validate(df, schema)
    assert [str(v) for v in report.violations] == [
        "row 3, column 'n': 1 repeats row 1, and the column is unique",
        "row 3, column 'flag': 'maybe' is not true or false",
        "row 3, column 'at': 2023-12-31T00:00:00+00:00 is below the minimum "
        "2024-01-01T00:00:00+00:00",
        "row 3, column 'label': is empty, and the column is not nullable",
        "row 4, column 'n': '2.5' is not a whole number",
        "row 4, column 'at': 'soon' is not a date or time (use ISO 8601, e.g. "
        "2024-01-31T12:00:00Z)",
    ]

    good = csv("n,flag,at,label\n1,yes,2024-02-01,a\n2,,2024-02-02T10:00:00+02:00,b\n", schema)
    report = validate(good, schema)
    assert report.ok, report.summary("good")
    frame = report.frame
    assert str(frame["n"].dtype) == "int64"
    assert frame["flag"].tolist()[0] is True and pd.isna(frame["flag"].iloc[1])
    assert frame["at"].iloc[1] == pd.Timestamp("2024-02-02T08:00:00Z")


def test_listing_stops_at_the_limit_and_counts_the_rest():
    schema = parse_schema('[columns.v]\ndtype = "float"\nmax = 0\n', "s.toml")
    df = csv("v\n" + "".join(f"{i}\n" for i in range(1, 101)), schema)
    report = validate(df, schema, max_listed=5)
    assert report.total == 100 and len(report.violations) == 5 and report.not_listed == 95
    assert [v.row for v in report.violations] == [1, 2, 3, 4, 5]
    assert report.summary("f.csv").endswith("; and 95 more; nothing was stored.")
    assert report.to_dict()["not_listed"] == 95


def test_columns_not_in_the_schema_are_kept_or_rejected():
    keep = parse_schema('[columns.a]\ndtype = "int"\n', "s.toml")
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    report = validate(df, keep)
    assert report.ok and list(report.frame.columns) == ["a", "b"]
    assert report.notes() == ["columns not in the schema were kept with the types read: 'b'"]
    reject = parse_schema('extra_columns = "reject"\n[columns.a]\ndtype = "int"\n', "s.toml")
    report = validate(df, reject)
    assert [str(v) for v in report.violations] == [
        "column 'b' is not in the schema, which rejects others"
    ]


def test_typed_input_is_checked_too():
    schema = parse_schema('[columns.a]\ndtype = "int"\n[columns.b]\ndtype = "float"\n', "s")
    df = pd.DataFrame({"a": [1.0, 2.5, None], "b": [True, False, True]})
    listed = [str(v) for v in validate(df, schema).violations]
    assert listed == [
        "row 1, column 'b': True is true/false, not a number",
        "row 2, column 'a': 2.5 is not a whole number",
        "row 2, column 'b': False is true/false, not a number",
        "row 3, column 'a': is empty, and the column is not nullable",
        "row 3, column 'b': True is true/false, not a number",
    ]
