"""Fixtures for the data pipeline tests: sample files in every format, a database session."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.orm import Session

from sctk.storage.engine import make_engine, session_scope

# six rows; x1 in [-1, 6], y whole numbers, site text
GOOD = pd.DataFrame(
    {
        "x1": [1.5, 2.5, -1.0, 4.0, 5.0, 6.0],
        "x2": [2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        "y": [3, 4, 5, 6, 7, 8],
        "site": ["a", "b", "a", "b", "a", "b"],
    }
)

SCHEMA = """\
[columns.x1]
dtype = "float"
min = -5.0
max = 10.0

[columns.x2]
dtype = "float"

[columns.y]
dtype = "int"
unique = true

[columns.site]
dtype = "str"
"""

PIPELINE = """\
description = "every kind of step"

[[steps]]
op = "select"
columns = ["x1", "x2", "y"]

[[steps]]
op = "rename"
columns = { x1 = "a" }

[[steps]]
op = "filter"
expr = "a > 0 and y < 10"

[[steps]]
op = "derive"
column = "r"
expr = "sqrt(a**2 + x2**2)"

[[steps]]
op = "normalise"
columns = ["a", "x2"]
method = "zscore"

[[steps]]
op = "split"
train = 0.6
calibration = 0.2
test = 0.2
seed = 7
"""


def write_good(directory: Path, fmt: str, df: pd.DataFrame = GOOD) -> Path:
    """DF written as a file of FMT ('csv', 'parquet', 'jsonl', 'npz') in DIRECTORY."""
    path = directory / f"good.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "parquet":
        df.to_parquet(path, index=False)
    elif fmt == "jsonl":
        path.write_text(
            "".join(json.dumps(rec) + "\n" for rec in df.to_dict(orient="records")),
            encoding="utf-8",
        )
    else:
        np.savez(path, **{c: df[c].to_numpy(dtype=None if c != "site" else str) for c in df})
    return path


@pytest.fixture
def session(settings) -> Iterator[Session]:
    """A session on the test's database (commits are the code under test's business)."""
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            yield s
    finally:
        engine.dispose()
