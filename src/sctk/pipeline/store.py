"""Datasets on disk and in the `datasets` table: deterministic files, hashes, verify, delete.

Files live in <home>/data/NAME.parquet (or .npz). The same frame always gives the same bytes
with the same library versions (recorded in each lineage): Parquet with fixed writer options
and no index, and .npz as a zip whose members carry a fixed 1980-01-01 timestamp (numpy's
own savez stamps the current time). A file is written to a temporary file in data/, fsynced,
and renamed into place only once its row is in the database; if the commit fails the file is
removed again, so a row never names a file that is not there and vice versa.

Deleting a dataset that another dataset's lineage names as an input is refused unless
forced: the derived dataset stays, and its lineage then shows that input as deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import os
import re
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sctk import crashpoints
from sctk.errors import Conflict, NotFound, SctkError
from sctk.fsutil import fsync_dir, make_temp, space_errors
from sctk.pipeline import arrays
from sctk.storage.models import Dataset

DATA_DIR = "data"
FORMATS = ("parquet", "npz")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")
_CHUNK = 1024 * 1024
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
# fixed, explicit writer options: the defaults may change between pyarrow versions
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "version": "2.6",
    "data_page_version": "1.0",
}


def versions() -> dict[str, str]:
    """Library versions that decide the bytes of a stored file."""
    import pyarrow

    from sctk import __version__

    return {
        "sctk": __version__,
        "pandas": pd.__version__,
        "pyarrow": pyarrow.__version__,
        "numpy": np.__version__,
    }


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SctkError(
            f"{str(name)[:80]!r} is not a usable dataset name; use up to 120 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit."
        )
    return name


def name_from_file(filename: str) -> str:
    """A dataset name from a file name: its stem, with anything unusable replaced."""
    stem = Path(filename).name.rsplit(".", 1)[0]
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:120]
    return check_name(cleaned or "dataset")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def data_dir(home: Path) -> Path:
    path = Path(home) / DATA_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def dataset_file(home: Path, ds: Dataset) -> Path:
    """The file of DS; a path stored in the row may not point outside data/."""
    base = (Path(home) / DATA_DIR).resolve()
    path = (Path(home) / ds.path).resolve()
    if base not in path.parents:
        raise SctkError(
            f"Dataset '{ds.name}' names the file {ds.path!r}, outside {DATA_DIR}/; "
            "the row was edited by hand: delete it and import the data again."
        )
    return path


def column_types(df: pd.DataFrame) -> dict[str, str]:
    return {str(c): str(t) for c, t in df.dtypes.items()}


# --- writing ----------------------------------------------------------------------------------


def _npz_array(name: str, col: pd.Series) -> np.ndarray:
    if arrays.is_array_column(col):  # one array per row: an [N, values] member
        return arrays.stacked(name, col)
    if pd.api.types.is_datetime64_any_dtype(col):
        if getattr(col.dt, "tz", None) is not None:
            col = col.dt.tz_convert("UTC").dt.tz_localize(None)
        return col.to_numpy()
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        if col.isna().any() or isinstance(col.dtype, pd.api.extensions.ExtensionDtype):
            if col.isna().any():
                return col.to_numpy(dtype="float64", na_value=np.nan)
            return col.to_numpy(dtype=col.dtype.numpy_dtype)  # type: ignore[union-attr]
        return col.to_numpy()
    if pd.api.types.is_string_dtype(col) and all(isinstance(v, str) for v in col.dropna()):
        if col.isna().any():
            raise SctkError(
                f"Column '{name}' has missing text values, which .npz cannot hold; store the "
                "dataset as parquet instead."
            )
        return np.array(col.tolist(), dtype=np.str_)
    raise SctkError(
        f"Column '{name}' holds {col.dtype} values, which .npz cannot hold without pickling; "
        "store the dataset as parquet instead."
    )


def _write_npz(df: pd.DataFrame, fh) -> None:
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for name in df.columns:
            array = _npz_array(str(name), df[name])
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            zf.writestr(info, buffer.getvalue())


def _write_parquet(df: pd.DataFrame, fh) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise _not_storable(exc) from None
    pq.write_table(table, fh, row_group_size=PARTITION_ROWS, **PARQUET_OPTIONS)


@dataclass
class Pending:
    """A file written and fsynced under a temporary name, waiting for its row."""

    tmp: Path
    final: Path
    sha256: str
    size: int

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


def write_frame(home: Path, name: str, df: pd.DataFrame, fmt: str) -> Pending:
    """Write DF to a temporary file next to its final place; hash it."""
    if fmt not in FORMATS:
        raise SctkError(f"Unknown format '{fmt}'; use parquet or npz.")
    directory = data_dir(home)
    with space_errors(directory, f"dataset {name}"):
        fd, tmp = make_temp(directory, name)
        try:
            with os.fdopen(fd, "wb") as fh:
                (_write_parquet if fmt == "parquet" else _write_npz)(df, fh)
                fh.flush()
                os.fsync(fh.fileno())
            crashpoints.reached("import.written")
            os.chmod(tmp, 0o640)
            return Pending(tmp, directory / f"{name}.{fmt}", file_sha256(tmp), tmp.stat().st_size)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


# Rows per Parquet row group: a stored dataset's partitions, read, exported and predicted on
# one at a time. pyarrow's own default, so that files written whole are partitioned alike.
PARTITION_ROWS = 1024 * 1024
# Readers read a row group at a time without pre-buffering: pyarrow's pre-buffer of an
# iteration over every row group grew with the file (1.3 GiB importing 12 million rows).


@dataclass(frozen=True)
class Batching:
    """Rows read at once, and rows per stored partition ([data] import_batch_rows and
    partition_rows): an import's, and a pipeline's."""

    batch_rows: int = 65_536  # readers.BATCH_ROWS
    partition_rows: int = PARTITION_ROWS


@dataclass
class Written:
    """A Parquet file written a partition at a time, waiting for its row."""

    pending: Pending
    rows: int
    columns: dict[str, str]


def row_groups(tables: Iterable[Any], rows: int) -> Iterator[Any]:
    """TABLES (Arrow, one schema) cut again into contiguous tables of ROWS rows each, the
    last one shorter: a row group written from one of them has the same bytes however the
    rows were batched before (a dictionary encoder's fallback depends on where the chunks
    of its input end). Memory holds about two row groups (the pieces and their copy)."""
    import pyarrow as pa

    buffered: list[Any] = []
    held = 0
    for table in tables:
        buffered.append(table)
        held += table.num_rows
        if held < rows:
            continue
        whole = pa.concat_tables(buffered)
        buffered = []
        while whole.num_rows >= rows:
            part = whole.slice(0, rows).combine_chunks()
            whole = whole.slice(rows)
            yield part
        buffered, held = ([whole] if whole.num_rows else []), whole.num_rows
    if held:
        yield pa.concat_tables(buffered).combine_chunks()


def as_tables(frames: Iterable[Any]) -> Iterator[Any]:
    """FRAMES (DataFrames or Arrow tables, one table in batches) as Arrow tables of the
    first one's schema, or one sentence for a column that cannot be stored."""
    import pyarrow as pa

    schema = None
    for frame in frames:
        if isinstance(frame, pd.DataFrame):
            schema = schema or _arrow_schema(frame)
            yield _arrow_table(frame, schema)
            continue
        schema = schema or frame.schema
        if frame.schema.equals(schema):
            yield frame
            continue
        try:
            yield frame.cast(schema)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise _not_storable(exc) from None


def write_parquet(
    where: Any, frames: Iterable[Any], partition_rows: int | None, options: dict[str, Any]
) -> Iterator[int]:
    """Write FRAMES (DataFrames or Arrow tables, one table in batches) to WHERE (a path or a
    writable file) as Parquet with OPTIONS, in row groups of PARTITION_ROWS rows
    (`row_groups`), or with None one row group per table as it comes (nothing held back;
    at most PARTITION_ROWS rows each); the rows of each row group once it is written (a
    caller streaming the file takes its bytes then). The file is complete when the
    iteration ends; no frame at all writes nothing."""
    import pyarrow.parquet as pq

    tables = as_tables(frames)
    head = next(tables, None)
    if head is None:
        return
    # made from the first table, so that a table of no rows still gives a file of its schema
    writer = pq.ParquetWriter(where, head.schema, **options)
    tables = itertools.chain([head], tables)
    try:
        for part in tables if partition_rows is None else row_groups(tables, partition_rows):
            if part.num_rows:
                writer.write_table(part, row_group_size=partition_rows or PARTITION_ROWS)
                yield part.num_rows
    except BaseException:
        # closed now, while its file is there: closed by the garbage collector once the
        # caller has removed the file, it raises again where nobody catches it
        with contextlib.suppress(Exception):
            writer.close()
        raise
    writer.close()


def write_partitions(
    home: Path, name: str, frames: Iterable[Any], partition_rows: int = PARTITION_ROWS
) -> Written:
    """Write the FRAMES (one table, batch by batch: DataFrames or Arrow tables) as a Parquet
    file of row groups of PARTITION_ROWS rows each; memory holds about one row group,
    whatever the total. The bytes depend on the rows alone (`row_groups`)."""
    if partition_rows < 1:
        raise SctkError(f"A partition holds at least one row, not {partition_rows}.")
    directory = data_dir(home)
    with space_errors(directory, f"dataset {name}"):
        fd, tmp = make_temp(directory, name)
        try:
            with os.fdopen(fd, "wb") as fh:
                batches = iter(frames)
                first = next(batches, None)
                if first is None:
                    raise SctkError(f"There are no rows to store as dataset {name}.")
                # the column types as a reader of the dataset gets them back
                columns = column_types(
                    first
                    if isinstance(first, pd.DataFrame)
                    else first.schema.empty_table().to_pandas()
                )
                pieces = itertools.chain([first], batches)
                rows = sum(write_parquet(fh, pieces, partition_rows, PARQUET_OPTIONS))
                fh.flush()
                os.fsync(fh.fileno())
            crashpoints.reached("import.written")
            os.chmod(tmp, 0o640)
            pending = Pending(
                tmp, directory / f"{name}.parquet", file_sha256(tmp), tmp.stat().st_size
            )
            return Written(pending, rows, columns)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _not_storable(exc: BaseException) -> SctkError:
    first = (str(exc).splitlines() or [type(exc).__name__])[0].rstrip(".")
    return SctkError(
        f"The data cannot be stored as Parquet ({first}); give each column one type, "
        "for example with a schema."
    )


def _arrow_schema(frame: pd.DataFrame):
    import pyarrow as pa

    try:
        return pa.Schema.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise _not_storable(exc) from None


def _arrow_table(frame: pd.DataFrame, schema):
    import pyarrow as pa

    try:
        return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise _not_storable(exc) from None


@dataclass
class Output:
    """One frame to store: its name, data, format and lineage; or, for data written a
    partition at a time (`write_partitions`), its file already WRITTEN instead of a frame."""

    name: str
    frame: pd.DataFrame | None
    format: str
    lineage: dict[str, Any]
    written: Written | None = None


@dataclass
class Stored:
    dataset: Dataset
    unchanged: bool  # an identical dataset of that name was already there


def find(session: Session, name: str) -> Dataset | None:
    return session.scalar(select(Dataset).where(Dataset.name == name))


def store(
    session: Session, home: Path, outputs: list[Output], origin: str, owner: str
) -> list[Stored]:
    """Store OUTPUTS together and commit: all of them or none.

    A name already taken by a dataset with the very same bytes is left as it is (so that a
    retried or repeated run is harmless); any other existing name is refused.
    """
    for out in outputs:
        check_name(out.name)
    pending: list[Pending] = []
    placed: list[Path] = []
    results: list[Stored] = []
    try:
        for out in outputs:
            if out.written is not None:
                p = out.written.pending
                rows, columns = out.written.rows, out.written.columns
            else:
                assert out.frame is not None
                p = write_frame(home, out.name, out.frame, out.format)
                rows, columns = len(out.frame), column_types(out.frame)
            pending.append(p)
            existing = find(session, out.name)
            if existing is not None:
                if existing.sha256 == p.sha256 and existing.format == out.format:
                    p.discard()
                    results.append(Stored(existing, True))
                    continue
                raise Conflict(
                    f"A dataset named '{out.name}' already exists with other content; choose "
                    "another name or delete it first."
                )
            ds = Dataset(
                name=out.name,
                origin=origin,
                path=f"{DATA_DIR}/{p.final.name}",
                format=out.format,
                sha256=p.sha256,
                size_bytes=p.size,
                rows=rows,
                columns=columns,
                lineage=out.lineage,
                owner=owner[:64],
            )
            session.add(ds)
            try:
                session.flush()  # the unique name is claimed before the file takes its place
            except IntegrityError:
                raise Conflict(
                    f"A dataset named '{out.name}' was stored by another run meanwhile; "
                    "choose another name."
                ) from None
            results.append(Stored(ds, False))
        for p in pending:
            if p.tmp.exists():
                os.replace(p.tmp, p.final)
                placed.append(p.final)
        if placed:
            fsync_dir(data_dir(home))
        session.commit()
    except BaseException:
        session.rollback()
        for p in pending:
            p.discard()
        for path in placed:
            path.unlink(missing_ok=True)
        raise
    return results


# --- reading, listing, verifying, deleting ----------------------------------------------------


def get(session: Session, name: str) -> Dataset:
    ds = find(session, name)
    if ds is None:
        raise NotFound(
            f"No dataset is named '{str(name)[:120]}'; 'sctk data list' shows the datasets."
        )
    return ds


def list_datasets(session: Session) -> list[Dataset]:
    return list(session.scalars(select(Dataset).order_by(Dataset.name)))


def read(home: Path, ds: Dataset) -> pd.DataFrame:
    """The stored frame of DS."""
    from sctk.pipeline.readers import read_table

    path = dataset_file(home, ds)
    if not path.exists():
        raise SctkError(
            f"The file of dataset '{ds.name}' ({ds.path}) is missing; restore it from a backup "
            "or delete the dataset."
        )
    return read_table(path, path.name, limits=None)  # checked when it was imported


def _existing(home: Path, ds: Dataset) -> Path:
    path = dataset_file(home, ds)
    if not path.exists():
        raise SctkError(
            f"The file of dataset '{ds.name}' ({ds.path}) is missing; restore it from a backup "
            "or delete the dataset."
        )
    return path


def partitions(home: Path, ds: Dataset) -> int:
    """How many partitions (Parquet row groups) DS is read in; an .npz dataset is one."""
    if ds.format != "parquet":
        return 1
    import pyarrow.parquet as pq

    return pq.ParquetFile(_existing(home, ds)).metadata.num_row_groups


def read_partition(home: Path, ds: Dataset, index: int) -> pd.DataFrame:
    """Partition INDEX of DS as a frame (an .npz dataset: the whole of it)."""
    if ds.format != "parquet":
        return read(home, ds)
    import pyarrow.parquet as pq

    return pq.ParquetFile(_existing(home, ds)).read_row_group(index).to_pandas()


def iter_frames(
    home: Path, ds: Dataset, batch_rows: int | None = None, columns: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    """The rows of DS in order, a partition (or BATCH_ROWS rows) at a time, so that memory
    holds one batch whatever the dataset's size; only COLUMNS if given. An .npz dataset
    comes whole (its format cannot be read in parts); a dataset with no rows comes as one
    empty frame."""
    if ds.format != "parquet":
        whole = read(home, ds)
        yield whole if columns is None else whole[columns]
        return
    import pyarrow.parquet as pq

    source = pq.ParquetFile(_existing(home, ds), pre_buffer=False)
    steady = _Steady(source)
    empty = source.schema_arrow.empty_table()
    if columns is not None:
        empty = empty.select(columns)
    if batch_rows is None:
        for index in range(source.metadata.num_row_groups):
            yield steady(source.read_row_group(index, columns=columns).to_pandas())
        if source.metadata.num_row_groups == 0:
            yield empty.to_pandas()
        return
    yielded = False
    for batch in source.iter_batches(batch_size=batch_rows, columns=columns):
        yielded = True
        yield steady(batch.to_pandas())
    if not yielded:
        yield empty.to_pandas()


class _Steady:
    """Each batch of a Parquet file in the column types of the whole file read at once.

    pandas gives a whole-number or true/false column with a missing value another type
    (float, object) than the same column without one, so batches of one file would come in
    different types -- and a transform or a hash of the rows would depend on where batches
    end. The file's statistics say which columns have missing values anywhere."""

    def __init__(self, source: Any):
        import pyarrow as pa

        schema = source.schema_arrow
        meta = source.metadata
        holes = set()
        for j in range(meta.num_columns):
            path = meta.schema.column(j).path
            for g in range(meta.num_row_groups):
                stats = meta.row_group(g).column(j).statistics
                if stats is None or not stats.has_null_count or stats.null_count:
                    holes.add(path)
                    break
        plain = schema.empty_table().to_pandas().dtypes
        nulls = (
            pa.Table.from_arrays([pa.nulls(1, f.type) for f in schema], schema=schema)
            .to_pandas()
            .dtypes
        )
        self.types = {name: nulls[name] if name in holes else plain[name] for name in plain.index}

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        wrong = {c: t for c, t in self.types.items() if c in frame.columns and frame[c].dtype != t}
        return frame.astype(wrong) if wrong else frame


@dataclass
class Check:
    name: str
    path: str
    status: str  # ok / missing / changed
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "status": self.status, "detail": self.detail}


def verify(home: Path, ds: Dataset) -> Check:
    """Re-hash the file of DS against its row."""
    path = dataset_file(home, ds)
    if not path.exists():
        return Check(ds.name, ds.path, "missing", f"{ds.path} is missing")
    actual = file_sha256(path)
    if actual != ds.sha256:
        return Check(
            ds.name,
            ds.path,
            "changed",
            f"{ds.path} has changed (sha256 {actual[:12]}..., recorded {ds.sha256[:12]}...)",
        )
    return Check(ds.name, ds.path, "ok", f"{ds.path} matches its sha256")


def failures_sentence(checks: list[Check]) -> str | None:
    """One sentence naming every dataset whose file is missing or changed, or None."""
    bad = [c for c in checks if c.status != "ok"]
    if not bad:
        return None
    listed = "; ".join(f"'{c.name}': {c.detail}" for c in bad)
    count = f"{len(bad)} dataset{'s' if len(bad) != 1 else ''}"
    return (
        f"{count} failed verification: {listed}; restore the files from a backup or delete "
        "those datasets."
    )


def _input_names(ds: Dataset) -> list[str]:
    return [i.get("name", "") for i in (ds.lineage or {}).get("inputs", [])]


def dependents(session: Session, name: str) -> list[str]:
    """Datasets whose lineage names NAME as an input."""
    return sorted(d.name for d in list_datasets(session) if name in _input_names(d))


def delete(session: Session, home: Path, name: str, force: bool = False) -> Dataset:
    """Remove a dataset's row and its file; refuse one that others derive from unless FORCE."""
    ds = get(session, name)
    users = [d for d in dependents(session, name) if d != name]
    if users and not force:
        shown = ", ".join(f"'{u}'" for u in users)
        raise Conflict(
            f"Dataset '{name}' is an input of {shown}; delete those first or pass --force "
            "(their lineage will then show it as deleted)."
        )
    path = dataset_file(home, ds)
    session.delete(ds)
    session.flush()
    # the file goes only once the row is gone for good: renamed aside first, so that a failed
    # commit can put it back
    aside = path.with_name(f".{path.name}.deleting")
    moved = False
    if path.exists():
        os.replace(path, aside)
        moved = True
    try:
        session.commit()
    except BaseException:
        session.rollback()
        if moved:
            os.replace(aside, path)
        raise
    aside.unlink(missing_ok=True)
    return ds


def lineage(session: Session, name: str) -> dict[str, Any]:
    """The chain of inputs of NAME back to imported files, as a tree."""
    return _node(session, get(session, name), recorded_sha=None, seen=set())


def _node(
    session: Session, ds: Dataset, recorded_sha: str | None, seen: set[str]
) -> dict[str, Any]:
    info = ds.lineage or {}
    node: dict[str, Any] = {
        "name": ds.name,
        "origin": ds.origin,
        "sha256": ds.sha256,
        "created_at": ds.created_at.isoformat() if ds.created_at else None,
    }
    if recorded_sha is not None and recorded_sha != ds.sha256:
        node["note"] = "replaced since it was used: its sha256 differs from the one recorded"
    if ds.origin == "import":
        node["source"] = info.get("source")
        node["schema"] = (info.get("schema") or {}).get("source")
        return node
    if ds.origin == "prediction":  # the uq.predict job: the model and alpha it used
        node["model"] = info.get("model")
        node["alpha"] = info.get("alpha")
    else:
        node["pipeline"] = {k: info.get("pipeline", {}).get(k) for k in ("path", "sha256")}
    if info.get("part"):
        node["part"] = info["part"]
    inputs = []
    for item in info.get("inputs", []):
        iname = item.get("name", "")
        child = find(session, iname)
        if child is None:
            inputs.append({"name": iname, "sha256": item.get("sha256"), "note": "deleted"})
        elif iname in seen:
            inputs.append({"name": iname, "sha256": child.sha256, "note": "cycle"})
        else:
            inputs.append(_node(session, child, item.get("sha256"), seen | {ds.name}))
    node["inputs"] = inputs
    return node


def as_dict(ds: Dataset, with_lineage: bool = True) -> dict[str, Any]:
    out = {
        "name": ds.name,
        "origin": ds.origin,
        "path": ds.path,
        "format": ds.format,
        "sha256": ds.sha256,
        "size_bytes": ds.size_bytes,
        "rows": ds.rows,
        "columns": ds.columns,
        "owner": ds.owner,
        "created_at": ds.created_at.isoformat() if ds.created_at else None,
    }
    if with_lineage:
        out["lineage"] = ds.lineage
    return out


@contextmanager
def temporary_upload(home: Path, filename: str) -> Iterator[Path]:
    """A temporary file under <home>/tmp, removed however the block ends."""
    directory = Path(home) / "tmp"
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="upload-", suffix=f"-{filename}", dir=directory)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
