"""Batch prediction: a tabular model over a stored dataset of any size, a partition at a time.

The inline prediction (`prediction.predict`, POST .../predict) holds its rows in memory and is
bounded; this path reads the dataset one partition (Parquet row group) at a time, predicts it
through the model's public `predict_interval`, and hands the rows on (features, then mean,
lower, upper, sigma, psi) to be written, so memory holds one partition whatever the size.
The rows stay Arrow columns from the file read to the file written: a DataFrame between
them cost as much CPU as the model's network (measured, issue 22).

On a Dask cluster (`client` given) each partition is one task: the worker reads that row
group from the shared data directory and predicts it with the model it loaded once
(`registry.load` keeps rebuilt models per process). A partition lost with its worker is
recomputed by the scheduler; partitions are written in order, so the output is the same
bytes as the local run.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sctk.errors import SctkError
from sctk.pipeline import store
from sctk.storage.models import Dataset, UqModel

OUTPUTS = ("mean", "lower", "upper", "sigma", "psi")
PREDICT_ROWS = 65_536  # rows read and given to the model at once
_READ = 1024 * 1024
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class ModelRef:
    """What a worker needs to load a registered model: picklable, no database session."""

    id: int
    name: str
    version: int
    kind: str
    path: str
    sha256: str
    features: tuple[str, ...]

    @classmethod
    def of(cls, row: UqModel) -> ModelRef:
        from sctk.uq import tabular_inputs

        return cls(
            row.id, row.name, row.version, row.kind, row.path, row.sha256,
            tuple(tabular_inputs.features_of(row)),
        )  # fmt: skip

    def row(self) -> UqModel:
        """A transient model row for `registry.load` (never added to a session)."""
        return UqModel(
            id=self.id, name=self.name, version=self.version, kind=self.kind, path=self.path,
            sha256=self.sha256,
        )  # fmt: skip


def check_streams(row: UqModel) -> None:
    """Batch prediction streams a dataset's rows; a kind that cannot is refused."""
    from sctk.uq.model_kind import kind_of

    if not kind_of(row).streams:
        raise SctkError(
            f"Model '{row.name}' v{row.version} is a {row.kind} model; batch prediction over a "
            f"dataset takes tabular models (predict {kind_of(row).unit}s with 'sctk uq "
            "predict' inline)."
        )


def output_schema(features: list[str] | tuple[str, ...]):
    """The predictions' columns, all float64: the features (but one named like an output),
    then OUTPUTS; with the pandas metadata a frame of them carries, so that a file written
    from these tables reads back as the frame it always did."""
    import pyarrow as pa

    names = [f for f in features if f not in OUTPUTS] + list(OUTPUTS)
    empty = pd.DataFrame({name: pd.Series(dtype="float64") for name in names})
    return pa.Schema.from_pandas(empty, preserve_index=False)


def feature_matrix(table, features: list[str], where: str) -> np.ndarray:
    """TABLE's FEATURES as a float matrix (column-major: each column one copy out of Arrow,
    with no DataFrame between), or one sentence saying what is wrong with them."""
    import pyarrow as pa

    from sctk.uq import tabular_inputs

    names = set(table.column_names)
    if not all(f in names and pa.types.is_float64(table.schema.field(f).type) for f in features):
        # missing, integer or text columns: the usual conversion and its sentences
        frame = table.select([f for f in features if f in names]).to_pandas()
        return np.asfortranarray(tabular_inputs.feature_matrix(frame, features, where))
    X = np.empty((table.num_rows, len(features)), dtype=np.float64, order="F")
    for j, name in enumerate(features):
        X[:, j] = table.column(name).to_numpy()  # a null is NaN, refused just below
    return tabular_inputs.checked_finite(X, features, where)


def predict_table(
    home: Path, ref: ModelRef, table, alpha: float, what: str, first_row: int = 0, model=None
):
    """TABLE's feature columns (as float64) and the model's outputs for each of its rows, as
    an Arrow table of `output_schema`. MODEL: REF's estimator when the caller holds it."""
    import pyarrow as pa

    from sctk.uq import registry

    schema = output_schema(ref.features)
    rows = table.num_rows
    if rows == 0:
        return schema.empty_table()
    where = f"{what} (rows {first_row:,} to {first_row + rows - 1:,})"
    features = list(ref.features)
    X = feature_matrix(table, features, where)
    if model is None:
        model = registry.load(home, ref.row())
    outputs = {key: np.empty(rows, dtype=np.float64) for key in OUTPUTS}
    # the model's intermediate tensors (input gradients for psi) grow with the rows it is
    # given: a partition of a million rows is predicted a slice at a time
    for start in range(0, rows, PREDICT_ROWS):
        out = model.predict_interval(X[start : start + PREDICT_ROWS], alpha=alpha)
        for key in OUTPUTS:
            outputs[key][start : start + PREDICT_ROWS] = out[key]
    kept = [X[:, j] for j, f in enumerate(features) if f not in OUTPUTS]
    # contiguous float64 arrays become Arrow columns without a copy
    columns = [pa.array(values) for values in [*kept, *(outputs[k] for k in OUTPUTS)]]
    return pa.Table.from_arrays(columns, schema=schema)


def predict_partition(
    home: str, ref: ModelRef, ds_path: str, ds_name: str, index: int, first_row: int, alpha: float
):
    """Partition INDEX of the dataset file DS_PATH predicted by REF, as an Arrow table (a Dask
    task: plain, picklable arguments; the model is loaded once per worker process)."""
    import pyarrow.parquet as pq

    source = pq.ParquetFile(Path(home) / ds_path, pre_buffer=False)
    columns = [c for c in ref.features if c in source.schema_arrow.names]
    table = source.read_row_group(index, columns=columns)
    return predict_table(Path(home), ref, table, alpha, f"Dataset '{ds_name}'", first_row)


def _arrow(frame: pd.DataFrame, ref: ModelRef):
    """FRAME's feature columns as an Arrow table (its other columns may be of any type)."""
    import pyarrow as pa

    present = [f for f in ref.features if f in frame.columns]
    return pa.Table.from_pandas(frame[present], preserve_index=False)


def _row_starts(home: Path, ds: Dataset) -> list[int]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(store.dataset_file(home, ds)).metadata
    starts, at = [], 0
    for g in range(meta.num_row_groups):
        starts.append(at)
        at += meta.row_group(g).num_rows
    return starts


def predictions(
    home: Path,
    row: UqModel,
    ds: Dataset,
    alpha: float,
    *,
    client: Any = None,
    progress: Progress | None = None,
) -> Iterator[Any]:
    """The predictions for every row of DS as Arrow tables (`output_schema`), a partition or
    a slice of one at a time and in order; CLIENT (a dask.distributed Client) computes the
    partitions on its cluster's workers. A file that fails verification ends the iteration
    with an error after the last table: a caller keeps nothing until the iteration ends."""
    from sctk.uq.conformal import check_alpha

    check_streams(row)
    alpha = check_alpha(alpha)
    if not store.dataset_file(home, ds).exists():
        refuse(ds, store.verify(home, ds))
    # the file is hashed on a thread of its own while it is read and predicted (hashlib and
    # file reads release the GIL): its 5% of the CPU off the critical path. Nothing is
    # final before the check: every caller (the CLI's --out, the uq.predict job) consumes
    # the tables into a temporary file renamed only once the iteration has ended, and the
    # check ends it (or replaces the error a damaged file caused while being read)
    hashing = _Verifying(home, ds)
    try:
        yield from _predicted(home, row, ds, alpha, client, progress)
    except Exception:
        hashing.check()
        raise
    hashing.check()


def refuse(ds: Dataset, check: Any) -> None:
    """Raise the sentence of DS's failed verification CHECK."""
    raise SctkError(
        f"Dataset '{ds.name}' failed verification ({check.detail}); restore it before "
        "predicting on it."
    )


class _Verifying:
    """store.verify(home, ds) on a thread; check() waits for it and refuses a failure."""

    def __init__(self, home: Path, ds: Dataset):
        import threading

        self.result: Any = None
        self.thread = threading.Thread(target=self._run, args=(home, ds), daemon=True)
        self.ds = ds
        self.thread.start()

    def _run(self, home: Path, ds: Dataset) -> None:
        try:
            self.result = store.verify(home, ds)
        except Exception as exc:  # an unreadable file: reported as a failed check
            self.result = store.Check(ds.name, ds.path, "unreadable", str(exc))

    def check(self) -> None:
        self.thread.join()
        if self.result.status != "ok":
            refuse(self.ds, self.result)


def _predicted(
    home: Path,
    row: UqModel,
    ds: Dataset,
    alpha: float,
    client: Any = None,
    progress: Progress | None = None,
) -> Iterator[Any]:
    ref = ModelRef.of(row)
    report = progress or (lambda _f, _m: None)
    what = f"Dataset '{ds.name}'"
    # an .npz dataset is one partition; a Parquet file without row groups has no rows
    starts = _row_starts(home, ds) if ds.format == "parquet" else [0]
    total = len(starts)
    if ds.format != "parquet" or total == 0:
        yield predict_table(home, ref, _arrow(store.read(home, ds), ref), alpha, what)
        report(1.0, "partition 1 of 1" if total else "no rows")
        return
    if client is None:
        from sctk.pipeline.export import ahead
        from sctk.uq import registry

        model = registry.load(home, ref.row())  # once, not once per slice
        # the next slice is read (Arrow decodes without the GIL) while this one is predicted
        for index, first, table in ahead(_slices(home, ds, starts, ref)):
            if table is None:  # the end of partition INDEX
                report((index + 1) / total, f"partition {index + 1} of {total}")
                continue
            yield predict_table(home, ref, table, alpha, what, first, model)
        return
    yield from _on_cluster(client, home, ref, ds, starts, alpha, report)


def _slices(home: Path, ds: Dataset, starts: list[int], ref: ModelRef) -> Iterator[Any]:
    """(partition, first row, table of the features) for each slice of PREDICT_ROWS rows of
    DS in order, and (partition, next row, None) at the end of each partition: memory holds
    a slice, not a million rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # a column chunk read a megabyte at a time, not whole (84 against 30 MiB of Arrow memory
    # for 8 columns, measured)
    source = pq.ParquetFile(store.dataset_file(home, ds), pre_buffer=False, buffer_size=_READ)
    columns = [c for c in ref.features if c in source.schema_arrow.names]
    for index, start in enumerate(starts):
        done = start
        for piece in source.iter_batches(PREDICT_ROWS, row_groups=[index], columns=columns):
            yield index, done, pa.Table.from_batches([piece])
            done += piece.num_rows
        yield index, done, None


def _on_cluster(client, home, ref, ds, starts, alpha, report) -> Iterator[Any]:
    """Partitions as Dask tasks, a window of them in flight, taken back in order (so that
    the workers do not hold every finished partition while the first is written)."""
    total = len(starts)
    window = max(2 * sum(client.nthreads().values()), 2)
    futures: dict[int, Any] = {}
    submitted = 0
    run = uuid.uuid4().hex[:12]

    def submit(index: int) -> None:
        futures[index] = client.submit(
            predict_partition,
            str(home),
            ref,
            ds.path,
            ds.name,
            index,
            starts[index],
            alpha,
            key=f"sctk-predict-{run}-{index}",
            pure=False,
        )

    while submitted < min(window, total):
        submit(submitted)
        submitted += 1
    for index in range(total):
        future = futures.pop(index)
        frame = future.result()
        future.release()
        if submitted < total:
            submit(submitted)
            submitted += 1
        yield frame
        report((index + 1) / total, f"partition {index + 1} of {total}")
