"""Read CSV, Parquet, JSON lines and NumPy .npz files into a pandas DataFrame.

An .npz array of more than one dimension [N, ...] becomes an array column (one flattened
array per row, sctk.pipeline.arrays); one-dimensional arrays are plain columns.

The extension says which reader to use; the first bytes of the file are checked against it
first, so that a Parquet file saved as `.csv` is reported as such (one sentence naming the
file and what it looks like) instead of surfacing as a parser's error deep in its content.
"""

from __future__ import annotations

import codecs
import json
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sctk.errors import SctkError
from sctk.pipeline import arrays

# extension -> format name
EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".npz": "npz",
}
_FORMAT_LABEL = {
    "csv": "CSV text",
    "parquet": "a Parquet file",
    "jsonl": "JSON lines",
    "npz": "a NumPy .npz archive",
}
_SNIFF_BYTES = 64 * 1024


class UnreadableFile(SctkError):
    """A file that is not what its extension says, or that its reader cannot parse."""

    http_status = 422
    title = "Unreadable file"


def file_format(name: str) -> str:
    """The format a file name's extension names ('csv', 'parquet', 'jsonl', 'npz')."""
    suffix = Path(name).suffix.lower()
    if suffix not in EXTENSIONS:
        known = ", ".join(sorted(EXTENSIONS))
        shown = f"extension '{suffix}'" if suffix else "no extension"
        raise UnreadableFile(f"{name} has {shown}, which sctk cannot import; use one of {known}.")
    return EXTENSIONS[suffix]


def _decodes_as_utf8(head: bytes, complete: bool) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(head, final=complete)  # a character cut at the sniff limit is fine
    except UnicodeDecodeError:
        return False
    return True


def sniff(head: bytes, complete: bool = False) -> str:
    """What the first bytes of a file look like: 'a Parquet file', 'CSV text', ...

    COMPLETE says HEAD is the whole file (so a cut-off last character is an error).
    """
    if not head.strip():
        return "an empty file"
    if head.startswith(b"PAR1"):
        return "a Parquet file"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "a zip archive"
    if head.startswith(b"\x93NUMPY"):
        return "a single NumPy .npy array"
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed data"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if b"\x00" in head or not _decodes_as_utf8(head, complete):
        return "binary data"
    text = head.decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")
    first = text.split("\n", 1)[0].strip()
    try:
        value = json.loads(first)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return "JSON lines"
    if text.startswith(("{", "[")):
        return "a JSON document"
    return "CSV text"


_LOOKS_LIKE_EXTENSION = {
    "a Parquet file": ".parquet",
    "JSON lines": ".jsonl",
    "CSV text": ".csv",
}


def _mismatch(name: str, fmt: str, looks: str) -> UnreadableFile:
    if looks == "an empty file":
        return UnreadableFile(f"{name} is empty; there is nothing to import.")
    ext = _LOOKS_LIKE_EXTENSION.get(looks)
    fix = (
        f"rename it to {ext} if that is what it holds"
        if ext
        else f"export the data again as {_FORMAT_LABEL[fmt]}"
    )
    return UnreadableFile(
        f"{name} is not {_FORMAT_LABEL[fmt]} as its extension says: it looks like {looks}; {fix}."
    )


def _check_content(path: Path, name: str, fmt: str) -> None:
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
        complete = not fh.read(1)
    looks = sniff(head, complete)
    expected = {
        "csv": ("CSV text",),
        "parquet": ("a Parquet file",),
        "jsonl": ("JSON lines",),
        "npz": ("a zip archive",),
    }[fmt]
    if looks not in expected:
        raise _mismatch(name, fmt, looks)


@dataclass
class Table:
    """A file's rows, and the per-row shape of each array column (.npz arrays [N, ...])."""

    frame: pd.DataFrame
    shapes: dict[str, list] = field(default_factory=dict)


def read_table(
    path: Path, name: str | None = None, text_columns: Iterable[str] = ()
) -> pd.DataFrame:
    """Read PATH into a DataFrame; NAME (default: the file's name) is the name users know it by
    and chooses the reader by its extension.

    TEXT_COLUMNS are read from CSV as text, untouched, so that a schema can report a bad value
    ('abc' in a float column) exactly as the file holds it.
    """
    return read_file(path, name, text_columns).frame


def read_file(path: Path, name: str | None = None, text_columns: Iterable[str] = ()) -> Table:
    """As `read_table`, with the per-row shapes of the array columns an .npz file holds."""
    name = name or path.name
    fmt = file_format(name)
    _check_content(path, name, fmt)
    reader = {"csv": _read_csv, "parquet": _read_parquet, "jsonl": _read_jsonl, "npz": _read_npz}
    read = reader[fmt](path, name, set(text_columns))
    table = read if isinstance(read, Table) else Table(read)
    df = table.frame
    if df.columns.duplicated().any():
        dup = df.columns[df.columns.duplicated()][0]
        raise UnreadableFile(f"{name} has the column '{dup}' twice; give each column its own name.")
    return Table(df.reset_index(drop=True), table.shapes)


def _read_csv(path: Path, name: str, text_columns: set[str]) -> pd.DataFrame:
    header = _csv_header(path, name)
    dup = next((c for i, c in enumerate(header) if c in header[:i]), None)
    if dup is not None:
        raise UnreadableFile(f"{name} has the column '{dup}' twice; give each column its own name.")
    try:
        return pd.read_csv(
            path, encoding="utf-8-sig", dtype={c: "str" for c in text_columns} or None
        )
    except UnicodeDecodeError as exc:
        raise UnreadableFile(
            f"{name} is not UTF-8 text (byte {exc.start} cannot be decoded); save it as UTF-8 CSV."
        ) from None
    except pd.errors.EmptyDataError:
        raise UnreadableFile(f"{name} has no columns; the first line must name them.") from None
    except pd.errors.ParserError as exc:
        raise UnreadableFile(f"{name} is not well-formed CSV: {_first_line(exc)}.") from None


def _csv_header(path: Path, name: str) -> list[str]:
    import csv

    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            return next(csv.reader(fh), [])
    except UnicodeDecodeError as exc:
        raise UnreadableFile(
            f"{name} is not UTF-8 text (byte {exc.start} cannot be decoded); save it as UTF-8 CSV."
        ) from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__).rstrip(".")


def _read_parquet(path: Path, name: str, _text: set[str]) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UnreadableFile(
            f"{name} starts like a Parquet file but cannot be read: {_first_line(exc)}; "
            "export it again."
        ) from None


def _read_jsonl(path: Path, name: str, _text: set[str]) -> pd.DataFrame:
    records = []
    try:
        with path.open(encoding="utf-8-sig") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise UnreadableFile(
                        f"{name} line {lineno} is not valid JSON ({_first_line(exc)}); "
                        "each line must hold one JSON object."
                    ) from None
                if not isinstance(record, dict):
                    raise UnreadableFile(
                        f"{name} line {lineno} holds a JSON {type(record).__name__}, not an "
                        'object; each line must hold one object such as {"x": 1.5}.'
                    )
                for key, value in record.items():
                    if isinstance(value, dict | list):
                        raise UnreadableFile(
                            f"{name} line {lineno}: '{key}' holds a nested "
                            f"{'object' if isinstance(value, dict) else 'list'}; "
                            "values must be numbers, text, true/false or null."
                        )
                records.append(record)
    except UnicodeDecodeError as exc:
        raise UnreadableFile(
            f"{name} is not UTF-8 text (byte {exc.start} cannot be decoded); save it as UTF-8."
        ) from None
    if not records:
        raise UnreadableFile(f"{name} holds no records; there is nothing to import.")
    return pd.DataFrame.from_records(records)


def _read_npz(path: Path, name: str, _text: set[str]) -> Table:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UnreadableFile(
            f"{name} is not a readable .npz archive: {_first_line(exc)}."
        ) from None
    columns: dict[str, np.ndarray] = {}
    with archive:
        if not archive.files:
            raise UnreadableFile(f"{name} holds no arrays; there is nothing to import.")
        for key in archive.files:
            try:
                value = archive[key]
            except ValueError as exc:
                if "allow_pickle" in str(exc):
                    raise UnreadableFile(
                        f"{name}: array '{key}' holds Python objects, which sctk does not load "
                        "(loading them could run code); save it with a numeric or text dtype."
                    ) from None
                raise UnreadableFile(
                    f"{name}: array '{key}' cannot be read: {_first_line(exc)}."
                ) from None
            if not isinstance(value, np.ndarray):
                raise UnreadableFile(
                    f"{name} is a zip archive but not a NumPy .npz: member '{key}' is not an "
                    "array; save the data with numpy.savez."
                )
            columns[key] = value
    try:
        df, shapes = arrays.to_frame(columns, name)
    except SctkError as exc:
        raise UnreadableFile(exc.message) from None
    return Table(df, shapes)
