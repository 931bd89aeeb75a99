"""Readers: every format reads the same table; a file unlike its extension is named so."""

from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pytest

from sctk.pipeline.readers import UnreadableFile, read_file, read_table, sniff
from tests.pipeline.conftest import GOOD, write_good


def one_sentence(exc: pytest.ExceptionInfo, *fragments: str) -> str:
    message = exc.value.message
    assert "\n" not in message and message.endswith("."), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl", "npz"])
def test_every_format_reads_the_same_table(tmp_path, fmt):
    df = read_table(write_good(tmp_path, fmt))
    assert list(df.columns) == list(GOOD.columns)
    assert df["x1"].tolist() == GOOD["x1"].tolist()
    assert df["y"].tolist() == GOOD["y"].tolist()
    assert df["site"].tolist() == GOOD["site"].tolist()


def test_csv_text_columns_are_kept_as_written(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("x,y\n1.50,abc\n2,3\n", encoding="utf-8")
    df = read_table(path, text_columns=["x"])
    assert df["x"].tolist() == ["1.50", "2"]  # as the file holds them, for a schema to judge


@pytest.mark.parametrize(
    ("real", "named", "looks"),
    [
        ("parquet", "data.csv", "looks like a Parquet file"),
        ("csv", "data.parquet", "looks like CSV text"),
        ("npz", "data.jsonl", "looks like a zip archive"),
        ("jsonl", "data.csv", "looks like JSON lines"),
        ("csv", "data.npz", "looks like CSV text"),
    ],
)
def test_a_file_unlike_its_extension_is_named(tmp_path, real, named, looks):
    source = write_good(tmp_path, real)
    target = tmp_path / named
    source.rename(target)
    with pytest.raises(UnreadableFile) as exc:
        read_table(target)
    one_sentence(exc, named, "as its extension says", looks)


def test_binary_and_empty_files(tmp_path):
    binary = tmp_path / "noise.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UnreadableFile) as exc:
        read_table(binary)
    one_sentence(exc, "noise.csv", "binary data")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("name,city\nJosé,Zürich\n".encode("latin-1"))
    with pytest.raises(UnreadableFile) as exc:
        read_table(latin)
    one_sentence(exc, "latin.csv", "binary data")
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(UnreadableFile) as exc:
        read_table(empty)
    one_sentence(exc, "empty.jsonl", "is empty")


def test_unknown_extension(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(UnreadableFile) as exc:
        read_table(path)
    one_sentence(exc, "data.xlsx", "'.xlsx'", ".csv")


def test_json_lines_name_the_bad_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"x": 1}\n{"x": 2}\n\n{"x": 3,}\n', encoding="utf-8")
    with pytest.raises(UnreadableFile) as exc:
        read_table(path)
    one_sentence(exc, "r.jsonl line 4 is not valid JSON")
    path.write_text('{"x": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(UnreadableFile) as exc:
        read_table(path)
    one_sentence(exc, "line 2 holds a JSON list")
    path.write_text('{"x": {"nested": 1}}\n', encoding="utf-8")
    with pytest.raises(UnreadableFile) as exc:
        read_table(path)
    one_sentence(exc, "line 1", "nested object")


def test_npz_arrays_must_be_equal_length_columns_without_pickles(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, x=np.arange(3.0), y=np.arange(4.0))
    with pytest.raises(UnreadableFile) as exc:
        read_table(path)
    one_sentence(exc, "different lengths", "'x' 3", "'y' 4")
    np.savez(path, x=np.float64(2.0))
    with pytest.raises(UnreadableFile) as exc:
        read_table(path)
    one_sentence(exc, "'x' is a single value, not a column")
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(UnreadableFile) as exc:
        read_table(path)
    one_sentence(exc, "'x' holds Python objects")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(UnreadableFile) as exc:
        read_table(path)
    one_sentence(exc, "not a NumPy .npz")


def test_csv_with_a_column_twice(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("x,y,x\n1,2,3\n", encoding="utf-8")
    with pytest.raises(UnreadableFile) as exc:
        read_table(path)
    one_sentence(exc, "'x' twice")


def test_sniff():
    assert sniff(b"PAR1....") == "a Parquet file"
    assert sniff(b'{"a": 1}\n{"a": 2}\n') == "JSON lines"
    assert sniff(b"a,b\n1,2\n") == "CSV text"
    assert sniff("é".encode()[:1]) == "CSV text"  # a character cut at the sniff limit
    assert sniff("é".encode()[:1], complete=True) == "binary data"
    assert sniff(pd.DataFrame({"a": [1]}).to_parquet()) == "a Parquet file"


def test_npz_arrays_of_more_dimensions_are_array_columns_with_their_shapes(tmp_path):
    path = tmp_path / "f.npz"
    x = np.arange(3 * 2 * 2 * 4, dtype=np.float32).reshape(3, 2, 2, 4)
    np.savez(path, x=x, y=np.ones((3, 5), dtype=np.int64), re=np.array([1.0, 2.0, 3.0]))
    table = read_file(path)
    assert table.shapes == {"x": [2, 2, 4], "y": [5]}
    df = table.frame
    assert list(df.columns) == ["x", "y", "re"] and df["re"].dtype == np.float64
    assert df["x"][1].dtype == np.float64 and df["x"][1].tolist() == x[1].reshape(-1).tolist()
    assert read_table(path)["y"][2].tolist() == [1.0] * 5


@pytest.mark.parametrize(
    ("arrays", "fragments"),
    [
        ({"x": np.zeros((0, 2, 3))}, ("'x' has no rows (shape [0, 2, 3])",)),
        ({"x": np.zeros((3, 0))}, ("'x' has shape [3, 0], so each row is empty",)),
        (
            {"x": np.zeros((3, 2)), "y": np.zeros((4, 2))},
            ("different numbers of rows", "'x' 3", "'y' 4"),
        ),
        ({"x": np.zeros((3, 2)), "t": np.zeros(4)}, ("different numbers of rows", "'t' 4")),
        ({"x": np.array([["a", "b"]])}, ("'x' of shape [1, 2] holds text values", "numbers")),
        ({"x": np.zeros((2, 2), bool)}, ("holds true/false values",)),
        ({"x": np.zeros((2, 2), complex)}, ("holds complex values",)),
    ],
)
def test_bad_npz_arrays_of_more_dimensions_are_one_sentence(tmp_path, arrays, fragments):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UnreadableFile) as exc:
        read_table(path)
    one_sentence(exc, "bad.npz: ", *fragments)
