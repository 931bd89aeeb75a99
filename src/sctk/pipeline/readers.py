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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sctk.errors import SctkError
from sctk.pipeline import arrays
from sctk.pipeline.limits import ARRAY_OVERHEAD, OBJECT_OVERHEAD, DataLimits

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
_BATCH_ROWS = 65_536  # rows decoded at once, so that a limit is met a batch at a time


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


_DEFAULT_LIMITS = DataLimits()


def read_table(
    path: Path,
    name: str | None = None,
    text_columns: Iterable[str] = (),
    limits: DataLimits | None = _DEFAULT_LIMITS,
) -> pd.DataFrame:
    """Read PATH into a DataFrame; NAME (default: the file's name) is the name users know it by
    and chooses the reader by its extension.

    TEXT_COLUMNS are read from CSV as text, untouched, so that a schema can report a bad value
    ('abc' in a float column) exactly as the file holds it. A file over LIMITS is refused
    (TooLarge) before it is decoded, or as soon as the count passes it; None reads without a
    bound (sctk's own stored datasets, checked when they were imported).
    """
    return read_file(path, name, text_columns, limits).frame


def read_file(
    path: Path,
    name: str | None = None,
    text_columns: Iterable[str] = (),
    limits: DataLimits | None = _DEFAULT_LIMITS,
) -> Table:
    """As `read_table`, with the per-row shapes of the array columns an .npz file holds."""
    name = name or path.name
    fmt = file_format(name)
    _check_content(path, name, fmt)
    reader = {"csv": _read_csv, "parquet": _read_parquet, "jsonl": _read_jsonl, "npz": _read_npz}
    read = reader[fmt](path, name, set(text_columns), limits)
    table = read if isinstance(read, Table) else Table(read)
    df = table.frame
    if df.columns.duplicated().any():
        dup = df.columns[df.columns.duplicated()][0]
        raise UnreadableFile(f"{name} has the column '{dup}' twice; give each column its own name.")
    return Table(df.reset_index(drop=True), table.shapes)


def _read_csv(
    path: Path, name: str, text_columns: set[str], limits: DataLimits | None
) -> pd.DataFrame:
    header = _csv_header(path, name)
    dup = next((c for i, c in enumerate(header) if c in header[:i]), None)
    if dup is not None:
        raise UnreadableFile(f"{name} has the column '{dup}' twice; give each column its own name.")
    dtype = {c: "str" for c in text_columns} or None
    try:
        if limits is None:
            return pd.read_csv(path, encoding="utf-8-sig", dtype=dtype)
        limits.check_columns(name, len(header))
        return _read_csv_bounded(path, name, dtype, max(len(header), 1), limits)
    except UnicodeDecodeError as exc:
        raise UnreadableFile(
            f"{name} is not UTF-8 text (byte {exc.start} cannot be decoded); save it as UTF-8 CSV."
        ) from None
    except pd.errors.EmptyDataError:
        raise UnreadableFile(f"{name} has no columns; the first line must name them.") from None
    except pd.errors.ParserError as exc:
        raise UnreadableFile(f"{name} is not well-formed CSV: {_first_line(exc)}.") from None


def _read_csv_bounded(
    path: Path, name: str, dtype: dict[str, str] | None, width: int, limits: DataLimits
) -> pd.DataFrame:
    """CSV read a batch of rows at a time, counting rows, values and memory as it goes: text
    declares nothing about its size, and stopping at the limit keeps the rest unread."""
    chunks, rows, nbytes = [], 0, 0
    stop = min(limits.rows, limits.cells // width) + 1  # one row past a limit proves it
    with pd.read_csv(
        path, encoding="utf-8-sig", dtype=dtype, chunksize=_BATCH_ROWS, nrows=stop
    ) as reader:
        for chunk in reader:
            rows += len(chunk)
            limits.check_rows(name, rows, width, at_least=rows == stop)
            nbytes += int(chunk.memory_usage(deep=True, index=False).sum())
            limits.check_bytes(name, nbytes, at_least=True)
            chunks.append(chunk)
    if len(chunks) == 1:
        return chunks[0]
    return pd.concat(chunks, ignore_index=True)


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


def _read_parquet(
    path: Path, name: str, _text: set[str], limits: DataLimits | None
) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if limits is None:
            return pq.read_table(path).to_pandas()
        return _read_parquet_bounded(path, name, limits)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UnreadableFile(
            f"{name} starts like a Parquet file but cannot be read: {_first_line(exc)}; "
            "export it again."
        ) from None


def _read_parquet_bounded(path: Path, name: str, limits: DataLimits) -> pd.DataFrame:
    """A Parquet file checked against LIMITS from its footer, then read a batch at a time.

    The footer declares the rows, the columns and each column's size once decompressed, so
    a file that holds too much is refused before a page is read. A dictionary-encoded text
    column can still decode to far more than its pages (one long value, repeated): such
    columns are read as dictionaries and their decoded size is counted per batch, before
    any batch is decoded.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    footer = pq.ParquetFile(path)
    meta, schema = footer.metadata, footer.schema_arrow
    rows, width = meta.num_rows, len(schema)
    limits.check_columns(name, max(width, meta.num_columns))
    limits.check_rows(name, rows, max(width, meta.num_columns))
    stored = sum(
        meta.row_group(g).column(c).total_uncompressed_size
        for g in range(meta.num_row_groups)
        for c in range(meta.num_columns)
    )
    least = sum(rows * _decoded_width(f.type) for f in schema)
    limits.check_bytes(name, max(stored, least))
    texts = [
        f.name
        for f in schema
        if pa.types.is_string(f.type)
        or pa.types.is_large_string(f.type)
        or pa.types.is_binary(f.type)
        or pa.types.is_large_binary(f.type)
    ]
    batches, nbytes = [], 0
    for batch in pq.ParquetFile(path, read_dictionary=texts).iter_batches(batch_size=_BATCH_ROWS):
        columns = []
        for field_, column in zip(schema, batch.columns, strict=True):
            if field_.name in texts and pa.types.is_dictionary(column.type):
                lengths = pc.binary_length(column.dictionary)
                decoded = pc.sum(pc.take(lengths, column.indices)).as_py() or 0
                nbytes += decoded + OBJECT_OVERHEAD * len(column)
                limits.check_bytes(name, nbytes, at_least=True)
                column = column.cast(field_.type)
            else:
                nbytes += column.nbytes + (
                    ARRAY_OVERHEAD * len(column) if pa.types.is_list(column.type) else 0
                )
                limits.check_bytes(name, nbytes, at_least=True)
            columns.append(column)
        batches.append(pa.RecordBatch.from_arrays(columns, schema=schema))
    return pa.Table.from_batches(batches, schema=schema).to_pandas()


def _decoded_width(type_) -> int:
    """The fewest bytes pandas holds a value of the Arrow TYPE_ in."""
    import pyarrow as pa

    if pa.types.is_boolean(type_):
        return 1
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return ARRAY_OVERHEAD
    try:
        return max(type_.bit_width // 8, 1)
    except ValueError:  # variable width: text, binary, dictionaries, ...
        return OBJECT_OVERHEAD


def _read_jsonl(path: Path, name: str, _text: set[str], limits: DataLimits | None) -> pd.DataFrame:
    records = []
    keys: set[str] = set()
    cells = nbytes = 0
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
                if limits is not None:
                    # counted as read: the records so far are what the file has cost yet
                    keys.update(record)
                    cells += len(record)
                    nbytes += len(line) + OBJECT_OVERHEAD * (len(record) + 1)
                    limits.check_columns(name, len(keys))
                    limits.check_rows(name, len(records), 1, at_least=True)
                    limits.check_cells(name, cells, at_least=True)
                    limits.check_bytes(name, nbytes, at_least=True)
    except UnicodeDecodeError as exc:
        raise UnreadableFile(
            f"{name} is not UTF-8 text (byte {exc.start} cannot be decoded); save it as UTF-8."
        ) from None
    if not records:
        raise UnreadableFile(f"{name} holds no records; there is nothing to import.")
    return pd.DataFrame.from_records(records)


def check_npz(path: Path, name: str, limits: DataLimits) -> None:
    """Refuse the .npz file PATH if the arrays its members declare would pass LIMITS.

    Each member's .npy header states its shape and dtype; they are read without loading
    any array, so that a small archive declaring (or compressing) a giant array is refused
    before numpy allocates it.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            limits.check_columns(name, len(members))
            rows = cells = nbytes = 0
            for info in members:
                key = info.filename.removesuffix(".npy")
                with archive.open(info) as fh:
                    shape, dtype = _npy_header(fh, name, key)
                count = int(np.prod(shape, dtype=object))
                rows = max(rows, int(shape[0]) if shape else 1)
                cells += count
                nbytes += max(info.file_size, count * max(dtype.itemsize, 8))
                if len(shape) > 1:
                    nbytes += ARRAY_OVERHEAD * int(shape[0])
                elif dtype.kind in "USO":
                    nbytes += OBJECT_OVERHEAD * count
            limits.check_rows(name, rows, 1)
            limits.check_cells(name, cells)
            limits.check_bytes(name, nbytes)
    except FileNotFoundError:
        raise
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UnreadableFile(
            f"{name} is not a readable .npz archive: {_first_line(exc)}."
        ) from None


def _npy_header(fh, name: str, key: str, with_order: bool = False):
    """The shape and dtype an .npy header declares (and whether it is Fortran-ordered)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read(fh)
    except ValueError:
        raise UnreadableFile(
            f"{name} is a zip archive but not a NumPy .npz: member '{key}' is not an array; "
            "save the data with numpy.savez."
        ) from None
    shape = tuple(int(d) for d in shape)
    return (shape, fortran, dtype) if with_order else (shape, dtype)


def _read_npz(path: Path, name: str, _text: set[str], limits: DataLimits | None) -> Table:
    if limits is not None:
        check_npz(path, name, limits)
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


# --- reading in batches ---------------------------------------------------------------------
#
# A local import reads its file a batch of rows at a time, so that its memory does not grow
# with the file. The batches carry the file's own types, which may differ from batch to
# batch; sctk.pipeline.settle decides one type per column over all of them.

BATCH_ROWS = _BATCH_ROWS


def iter_batches(
    path: Path,
    name: str | None = None,
    text_columns: Iterable[str] = (),
    batch_rows: int = BATCH_ROWS,
) -> Iterator[Table]:
    """PATH's rows, BATCH_ROWS at a time (at least one batch, maybe empty), with the checks
    and sentences of `read_file`; TEXT_COLUMNS are read from CSV as text."""
    name = name or path.name
    fmt = file_format(name)
    _check_content(path, name, fmt)
    if batch_rows < 1:
        raise SctkError(f"A batch holds at least one row, not {batch_rows}.")
    reader = {
        "csv": _csv_batches,
        "parquet": _parquet_batches,
        "jsonl": _jsonl_batches,
        "npz": _npz_batches,
    }[fmt]
    for table in reader(path, name, set(text_columns), batch_rows):
        df = table.frame
        if df.columns.duplicated().any():
            dup = df.columns[df.columns.duplicated()][0]
            raise UnreadableFile(
                f"{name} has the column '{dup}' twice; give each column its own name."
            )
        yield table


def _csv_batches(path: Path, name: str, text_columns: set[str], batch_rows: int):
    header = _csv_header(path, name)
    dup = next((c for i, c in enumerate(header) if c in header[:i]), None)
    if dup is not None:
        raise UnreadableFile(f"{name} has the column '{dup}' twice; give each column its own name.")
    dtype = {c: "str" for c in text_columns} or None
    yielded = False
    try:
        with pd.read_csv(path, encoding="utf-8-sig", dtype=dtype, chunksize=batch_rows) as reader:
            for chunk in reader:
                yielded = True
                yield Table(chunk.reset_index(drop=True))
        if not yielded:  # a header and no rows
            yield Table(pd.read_csv(path, encoding="utf-8-sig", dtype=dtype))
    except UnicodeDecodeError as exc:
        raise UnreadableFile(
            f"{name} is not UTF-8 text (byte {exc.start} cannot be decoded); save it as UTF-8 CSV."
        ) from None
    except pd.errors.EmptyDataError:
        raise UnreadableFile(f"{name} has no columns; the first line must name them.") from None
    except pd.errors.ParserError as exc:
        raise UnreadableFile(f"{name} is not well-formed CSV: {_first_line(exc)}.") from None


def _parquet_batches(path: Path, name: str, _text: set[str], batch_rows: int):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def unreadable(exc: BaseException) -> UnreadableFile:
        return UnreadableFile(
            f"{name} starts like a Parquet file but cannot be read: {_first_line(exc)}; "
            "export it again."
        )

    try:
        source = pq.ParquetFile(path, pre_buffer=False)
        schema = source.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise unreadable(exc) from None
    yielded = False
    try:
        for batch in source.iter_batches(batch_size=batch_rows):
            yielded = True
            yield Table(batch.to_pandas())
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise unreadable(exc) from None
    if not yielded:
        yield Table(schema.empty_table().to_pandas())


def _jsonl_batches(path: Path, name: str, _text: set[str], batch_rows: int):
    records: list[dict] = []
    seen = False
    for record in _jsonl_records(path, name):
        records.append(record)
        if len(records) == batch_rows:
            seen = True
            yield Table(pd.DataFrame.from_records(records))
            records = []
    if records or not seen:
        if not records:
            raise UnreadableFile(f"{name} holds no records; there is nothing to import.")
        yield Table(pd.DataFrame.from_records(records))


def _jsonl_records(path: Path, name: str) -> Iterator[dict]:
    """PATH's JSON objects one by one, each checked as `_read_jsonl` checks them."""
    try:
        with path.open(encoding="utf-8-sig") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                yield _json_record(line, lineno, name)
    except UnicodeDecodeError as exc:
        raise UnreadableFile(
            f"{name} is not UTF-8 text (byte {exc.start} cannot be decoded); save it as UTF-8."
        ) from None


def _json_record(line: str, lineno: int, name: str) -> dict:
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
    return record


@dataclass
class _Member:
    key: str
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype
    offset: int = 0  # where the array's bytes start in the archive (stored members)


def _npz_members(path: Path, name: str) -> list[_Member]:
    """Each member's .npy header, and where a stored (uncompressed) member's data starts."""
    import struct

    members = []
    try:
        with zipfile.ZipFile(path) as archive, path.open("rb") as raw:
            infos = archive.infolist()
            if not infos:
                raise UnreadableFile(f"{name} holds no arrays; there is nothing to import.")
            for info in infos:
                key = info.filename.removesuffix(".npy")
                with archive.open(info) as fh:
                    shape, fortran, dtype = _npy_header(fh, name, key, with_order=True)
                    header = fh.tell()
                start = 0
                if info.compress_type == zipfile.ZIP_STORED:
                    # the local header: 30 bytes, then the name and an extra field
                    raw.seek(info.header_offset + 26)
                    name_len, extra_len = struct.unpack("<HH", raw.read(4))
                    start = info.header_offset + 30 + name_len + extra_len
                members.append(_Member(key, info, tuple(shape), fortran, dtype, start + header))
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UnreadableFile(
            f"{name} is not a readable .npz archive: {_first_line(exc)}."
        ) from None
    return members


def _npz_batches(path: Path, name: str, _text: set[str], batch_rows: int):
    """An .npz archive a batch of rows at a time: stored members through a memory map,
    compressed ones decompressed as they are read (a Fortran-ordered compressed array, whose
    rows are not contiguous, is read whole)."""
    members = _npz_members(path, name)
    for m in members:
        if m.dtype.hasobject:
            raise UnreadableFile(
                f"{name}: array '{m.key}' holds Python objects, which sctk does not load "
                "(loading them could run code); save it with a numeric or text dtype."
            )
        if not m.shape:
            raise UnreadableFile(
                f"{name}: array '{m.key}' is a single value, not a column; save one value per "
                "row (a one-dimensional array) or one array per row ([N, ...])."
            )
    try:
        arrays.check_lengths(
            {m.key: m.shape[0] for m in members}, any(len(m.shape) > 1 for m in members), name
        )
    except SctkError as exc:
        raise UnreadableFile(exc.message) from None
    rows = members[0].shape[0]
    with zipfile.ZipFile(path) as archive:
        sources = {m.key: _npz_source(path, archive, m) for m in members}
        start = 0
        while True:
            stop = min(start + batch_rows, rows)
            batch = {m.key: sources[m.key](start, stop) for m in members}
            try:
                df, shapes = arrays.to_frame(batch, name)
            except SctkError as exc:
                raise UnreadableFile(exc.message) from None
            yield Table(df, shapes)
            start = stop
            if start >= rows:
                return


def _npz_source(path: Path, archive: zipfile.ZipFile, m: _Member):
    """A function (start, stop) -> the member's rows start..stop, read in order."""
    if m.info.compress_type == zipfile.ZIP_STORED:
        mapped = np.memmap(
            path, dtype=m.dtype, mode="r", offset=m.offset, shape=m.shape,
            order="F" if m.fortran else "C",
        )  # fmt: skip
        return lambda start, stop: np.array(mapped[start:stop])
    if m.fortran and len(m.shape) > 1:
        with archive.open(m.info) as fh:
            whole = np.lib.format.read_array(fh, allow_pickle=False)
        return lambda start, stop: whole[start:stop]
    fh = archive.open(m.info)
    _npy_header(fh, path.name, m.key)
    per_row = int(np.prod(m.shape[1:], dtype=np.int64)) * m.dtype.itemsize

    def read(start: int, stop: int) -> np.ndarray:
        data = fh.read((stop - start) * per_row)
        return np.frombuffer(data, dtype=m.dtype).reshape((stop - start, *m.shape[1:]))

    return read
