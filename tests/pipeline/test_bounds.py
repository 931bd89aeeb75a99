"""Bounds on what decoding and expressions may build: [data] limits, checked before the work.

Readers check a file's own metadata (Parquet footer, .npy headers) before reading and count
as they go where a format declares nothing (CSV, JSON lines); expressions refuse a text value
that would pass data.max_decoded_bytes before building it; deep TOML is one sentence.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sctk.errors import SctkError
from sctk.pipeline import store
from sctk.pipeline.expressions import CostlyExpression, PipelineError, evaluate
from sctk.pipeline.limits import DataLimits, TooLarge
from sctk.pipeline.readers import read_file
from sctk.pipeline.schema import SchemaError, parse_schema
from sctk.pipeline.service import import_file, run_pipeline
from sctk.pipeline.transforms import parse_pipeline
from tests.helpers import run_sctk
from tests.pipeline.test_cli import refused, sctk  # noqa: F401 - fixture
from tests.pipeline.test_transforms import sentence

MiB = 1024 * 1024
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])


def numbers_csv(path: Path, rows: int, columns: int = 2) -> Path:
    header = ",".join(f"c{i}" for i in range(columns))
    line = ",".join("1.5" for _ in range(columns))
    path.write_text(header + "\n" + (line + "\n") * rows, encoding="utf-8")
    return path


def numbers_jsonl(path: Path, rows: int) -> Path:
    path.write_text((json.dumps({"a": 1.5, "b": 2}) + "\n") * rows, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("limits", "fragments"),
    [
        (DataLimits(rows=100), ("more than the limit of 100 rows", "data.max_rows")),
        (DataLimits(cells=300), ("values", "data.max_cells")),
        (DataLimits(decoded_bytes=4096), ("decodes to more than", "data.max_decoded_bytes")),
        (DataLimits(columns=1), ("has 2 columns", "data.max_columns")),
    ],
    ids=["rows", "cells", "bytes", "columns"],
)
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_text_formats_are_counted_as_read_and_stopped_at_a_limit(tmp_path, fmt, limits, fragments):
    write = numbers_csv if fmt == "csv" else numbers_jsonl
    path = write(tmp_path / f"big.{fmt}", 100_000)
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge) as exc:
            read_file(path, limits=limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    sentence(exc.value.message, f"big.{fmt}", *fragments)
    assert exc.value.http_status == 413
    # stopped early: the whole file is 100,000 rows (tens of MB as JSON objects)
    assert peak < 10 * MiB, peak
    if limits.rows == 100:  # the same file within the limits reads whole
        assert len(read_file(path, limits=DataLimits()).frame) == 100_000


def test_parquet_limits_come_from_the_footer_and_from_each_batch(tmp_path):
    rows = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"x": np.zeros(5_000), "y": np.ones(5_000)}), rows)
    with pytest.raises(TooLarge) as exc:
        read_file(rows, limits=DataLimits(rows=4_999))
    sentence(exc.value.message, "rows.parquet holds 5,000 rows", "data.max_rows")
    with pytest.raises(TooLarge) as exc:
        read_file(rows, limits=DataLimits(columns=1))
    sentence(exc.value.message, "has 2 columns", "data.max_columns")
    with pytest.raises(TooLarge) as exc:
        read_file(rows, limits=DataLimits(cells=9_999))
    sentence(exc.value.message, "10,000 values", "data.max_cells")
    assert read_file(rows).frame.equals(pq.read_table(rows).to_pandas())

    # one 100 kB text value, dictionary-encoded on 2,000 rows: a few kB on disk, 200 MB in
    # memory; its decoded size is counted from the dictionary before a batch is decoded
    text = tmp_path / "text.parquet"
    column = pa.array(["v" * 100_000] * 2_000).dictionary_encode()
    pq.write_table(pa.table({"s": column.cast(pa.string())}), text, use_dictionary=True)
    assert text.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge) as exc:
            read_file(text, limits=DataLimits(decoded_bytes=32 * MiB))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    sentence(exc.value.message, "text.parquet decodes to", "data.max_decoded_bytes")
    assert peak < 16 * MiB, peak
    small = tmp_path / "small.parquet"
    pq.write_table(pa.table({"s": ["a", "b", None], "n": [1, 2, 3]}), small)
    assert read_file(small).frame.equals(pq.read_table(small).to_pandas())


def test_an_npz_is_checked_from_its_headers_for_a_model_too(tmp_path):
    """`sctk uq predict --data FILE.npz` reads fields through fields.read_npz."""
    import io
    import zipfile

    from sctk.uq import fields

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (50_000_000, 2, 8, 8)}
    )
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", header.getvalue() + b"\0" * 64)
        archive.writestr("y.npy", header.getvalue() + b"\0" * 64)
    with pytest.raises(SctkError) as exc:
        fields.read_npz(path, ("x", "y"))
    sentence(exc.value.message, "bomb.npz holds 50,000,000 rows", "data.max_rows")


def test_string_repetition_is_refused_before_it_allocates():
    # "n": whole numbers too large for int64, as a JSON-lines column can hold them
    df = pd.DataFrame(
        {"x": np.arange(300), "s": ["ab"] * 300, "n": pd.Series([10**30] * 300, dtype=object)}
    )
    costly = ("'a' * 10000000", "s * 10000000", "s + 'a' * 5000000", "s * x * 99999", "s * n")
    for expr in costly:
        tracemalloc.start()
        try:
            with pytest.raises(CostlyExpression) as exc:
                evaluate(df, expr)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        sentence(exc.value.message, "would build about", "data.max_decoded_bytes")
        assert exc.value.http_status == 413
        assert peak < 32 * MiB, (expr, peak)  # 'a' * 10**7 alone is 10 MB, on 300 rows 3 GB
    with pytest.raises(PipelineError, match="formatting text with % is not allowed"):
        evaluate(df, "'%999999999d' % 1")
    with pytest.raises(PipelineError, match=r"\*\* needs numeric columns"):
        evaluate(df, "n ** 99999999")
    # joining text grows linearly with the expression; within the limit it runs
    assert evaluate(df, "s + s + 'c' * 3").iloc[0] == "ababccc"
    assert evaluate(df, "s * 2", max_bytes=100_000).iloc[0] == "abab"
    with pytest.raises(CostlyExpression):
        evaluate(df, "s + s", max_bytes=1_000)


def test_a_costly_pipeline_stores_nothing(session, home, tmp_path):
    import_file(session, home, numbers_csv(tmp_path / "runs.csv", 300), name="runs")
    text = "[[steps]]\nop = 'derive'\ncolumn = 'big'\nexpr = \"'a' * 10000000\"\n"
    tracemalloc.start()
    try:
        with pytest.raises(PipelineError) as exc:
            run_pipeline(session, home, ["runs"], parse_pipeline(text, "/p/costly.toml"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    sentence(exc.value.message, "step 1 (derive)", "would build about 3,000,0")
    assert peak < 64 * MiB, peak
    assert [d.name for d in store.list_datasets(session)] == ["runs"]


@sqlite_only
def test_the_cli_refuses_a_costly_pipeline_and_deep_toml_with_one_sentence(
    sctk,  # noqa: F811
    home,
    tmp_path,
    monkeypatch,
):
    monkeypatch.setenv("SCTK_DATA__MAX_ROWS", "500")
    big = tmp_path / "big.parquet"
    pq.write_table(pa.table({"x": np.zeros(501)}), big)
    # stored as .npz the file is read whole, within the limits; as Parquet it is streamed
    # in batches, and only the disk (and data.max_import_bytes) bounds it
    refused(
        sctk("data", "import", str(big), "--format", "npz"),
        "big.parquet holds 501 rows",
        "data.max_rows",
    )
    assert sctk("data", "import", str(big)).code == 0
    assert sctk("data", "import", str(numbers_csv(tmp_path / "runs.csv", 300))).code == 0
    costly = tmp_path / "costly.toml"
    costly.write_text(
        "[[steps]]\nop = 'derive'\ncolumn = 'big'\nexpr = \"c0 * 0 + 'a' * 10000000\"\n",
        encoding="utf-8",
    )
    ran = sctk("data", "transform", "runs", "--pipeline", str(costly), "--inline")
    assert ran.code == 1 and "Traceback" not in ran.err
    last = ran.err.strip().splitlines()[-1]  # after the progress lines of the inline run
    sentence(last, "Error: step 1 (derive)", "would build about", "data.max_decoded_bytes")
    assert "costly" not in sctk("data", "list").out
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    refused(
        sctk("data", "transform", "runs", "--pipeline", str(deep)),
        "deep.toml nests tables or arrays more than 32 levels deep",
    )
    refused(
        sctk("data", "import", str(tmp_path / "runs.csv"), "--name", "r2", "--schema", str(deep)),
        "nests tables or arrays more than 32 levels deep",
    )
    (home / "sctk.toml").write_text("x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n")
    # the installed command, as an operator runs it on a broken configuration
    checked = run_sctk("config", "check", home=home)
    assert checked.returncode != 0
    assert "Traceback" not in checked.stderr + checked.stdout
    assert "sctk.toml nests tables or arrays more than 32 levels deep; flatten it." in (
        checked.stderr + checked.stdout
    )


def test_deep_toml_is_a_sentence_for_every_reader():
    deep = "a = " + "[" * 40 + "1" + "]" * 40  # deeper than 32, shallow enough to parse
    with pytest.raises(SchemaError, match="more than 32 levels deep"):
        parse_schema(deep, "s.toml")
    with pytest.raises(PipelineError, match="more than 32 levels deep"):
        parse_pipeline(deep, "p.toml")
    # sctk's own shape of file still parses
    assert list(parse_schema('[columns.x]\ndtype = "float"\n').columns) == ["x"]
