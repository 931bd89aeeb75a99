"""Batch prediction: a tabular model over a stored dataset of any size, a partition at a time.

The inline prediction (`registry.predict`, POST .../predict) holds its rows in memory and is
bounded; this path reads the dataset one partition (Parquet row group) at a time, predicts it
through the model's public `predict_interval`, and hands the rows on (features, then mean,
lower, upper, sigma, psi) to be written, so memory holds one partition whatever the size.

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
        from sctk.uq import registry

        return cls(
            row.id, row.name, row.version, row.kind, row.path, row.sha256,
            tuple(registry.features_of(row)),
        )  # fmt: skip

    def row(self) -> UqModel:
        """A transient model row for `registry.load` (never added to a session)."""
        return UqModel(
            id=self.id, name=self.name, version=self.version, kind=self.kind, path=self.path,
            sha256=self.sha256,
        )  # fmt: skip


def check_tabular(row: UqModel) -> None:
    if row.kind == "field":
        raise SctkError(
            f"Model '{row.name}' v{row.version} is a field model; batch prediction over a "
            "dataset takes tabular models (predict fields with 'sctk uq predict' inline)."
        )


def predict_frame(
    home: Path, ref: ModelRef, frame: pd.DataFrame, alpha: float, what: str, first_row: int = 0
) -> pd.DataFrame:
    """FRAME's feature columns and the model's outputs for each of its rows."""
    from sctk.uq import registry

    features = list(ref.features)
    if len(frame) == 0:
        empty = {f: pd.Series(dtype="float64") for f in features}
        return pd.DataFrame({**empty, **{k: pd.Series(dtype="float64") for k in OUTPUTS}})
    where = f"{what} (rows {first_row:,} to {first_row + len(frame) - 1:,})"
    X = registry.feature_matrix(frame, features, where)
    model = registry.load(home, ref.row())
    result = frame[features].reset_index(drop=True).astype("float64")
    outputs = {key: np.empty(len(X), dtype=np.float64) for key in OUTPUTS}
    # the model's intermediate tensors (input gradients for psi) grow with the rows it is
    # given: a partition of a million rows is predicted a slice at a time
    for start in range(0, len(X), PREDICT_ROWS):
        out = model.predict_interval(X[start : start + PREDICT_ROWS], alpha=alpha)
        for key in OUTPUTS:
            outputs[key][start : start + PREDICT_ROWS] = out[key]
    for key in OUTPUTS:
        result[key] = outputs[key]
    return result


def predict_partition(
    home: str, ref: ModelRef, ds_path: str, ds_name: str, index: int, first_row: int, alpha: float
) -> pd.DataFrame:
    """Partition INDEX of the dataset file DS_PATH predicted by REF (a Dask task: plain,
    picklable arguments; the model is loaded once per worker process)."""
    import pyarrow.parquet as pq

    frame = pq.ParquetFile(Path(home) / ds_path).read_row_group(index).to_pandas()
    return predict_frame(Path(home), ref, frame, alpha, f"Dataset '{ds_name}'", first_row)


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
) -> Iterator[pd.DataFrame]:
    """The predictions for every row of DS, a partition at a time and in order; CLIENT (a
    dask.distributed Client) computes the partitions on its cluster's workers."""
    from sctk.uq.conformal import check_alpha

    check_tabular(row)
    alpha = check_alpha(alpha)
    check = store.verify(home, ds)
    if check.status != "ok":
        raise SctkError(
            f"Dataset '{ds.name}' failed verification ({check.detail}); restore it before "
            "predicting on it."
        )
    ref = ModelRef.of(row)
    report = progress or (lambda _f, _m: None)
    what = f"Dataset '{ds.name}'"
    if ds.format != "parquet":  # an .npz dataset is one partition
        frame = store.read(home, ds)
        yield predict_frame(home, ref, frame, alpha, what)
        report(1.0, "partition 1 of 1")
        return
    starts = _row_starts(home, ds)
    total = len(starts)
    if total == 0:
        yield predict_frame(home, ref, store.read(home, ds), alpha, what)
        report(1.0, "no rows")
        return
    if client is None:
        import pyarrow.parquet as pq

        source = pq.ParquetFile(store.dataset_file(home, ds), pre_buffer=False)
        columns = [c for c in ref.features if c in source.schema_arrow.names]
        for index, start in enumerate(starts):
            # a partition in slices: memory holds PREDICT_ROWS rows, not a million
            done = start
            for piece in source.iter_batches(PREDICT_ROWS, row_groups=[index], columns=columns):
                frame = piece.to_pandas()
                yield predict_frame(home, ref, frame, alpha, what, done)
                done += len(frame)
            report((index + 1) / total, f"partition {index + 1} of {total}")
        return
    yield from _on_cluster(client, home, ref, ds, starts, alpha, report)


def _on_cluster(client, home, ref, ds, starts, alpha, report) -> Iterator[pd.DataFrame]:
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
