"""The `uq.predict` job kind: a model's predictions for a whole dataset, stored as a dataset.

Parameters (JSON)::

    {"model": "drag",          # a model name (newest version), name:version or id
     "dataset": "runs",        # the stored dataset to predict for
     "output": "runs-pred",    # the dataset the predictions are stored as
     "alpha": 0.1}             # optional miscoverage (intervals cover 1 - alpha)

The output holds the model's feature columns and mean, lower, upper, sigma, psi, stored as
partitioned Parquet; its lineage names the model (id, name, version, sha256), the input
dataset (name, sha256) and alpha. With executor.kind = "dask" the partitions are computed on
the cluster's workers (sctk.uq.batch); the stored bytes are those of the local run.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from sctk.errors import Conflict, SctkError
from sctk.jobs.kinds import JobContext, job_kind

KIND = "uq.predict"
_KEYS = {"model", "dataset", "output", "alpha"}


def parse_params(params: dict[str, Any]) -> dict[str, Any]:
    """The job's parameters checked, or one sentence naming the wrong one."""
    from sctk.pipeline import store
    from sctk.uq.conformal import check_alpha

    unknown = sorted(set(params) - _KEYS)
    if unknown:
        raise SctkError(
            f"uq.predict does not take '{unknown[0][:60]}'; it takes model, dataset, output "
            "and alpha."
        )
    for key in ("model", "dataset", "output"):
        value = params.get(key)
        if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
            raise SctkError(
                f"uq.predict needs '{key}': a {'model' if key == 'model' else 'dataset'} name."
            )
    store.check_name(str(params["output"]))
    if str(params["output"]) == str(params["dataset"]):
        raise SctkError("uq.predict's output must be a new dataset, not its input; name another.")
    alpha = params.get("alpha", 0.1)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        raise SctkError(f"uq.predict's alpha must be a number in (0, 1), not {alpha!r}.")
    return {
        "model": str(params["model"]),
        "dataset": str(params["dataset"]),
        "output": str(params["output"]),
        "alpha": check_alpha(float(alpha)),
    }


def _check(params: dict[str, Any]) -> None:
    parse_params(params)


def predict_dataset(
    session: Session,
    home: Path,
    params: dict[str, Any],
    *,
    owner: str = "system",
    client: Any = None,
    progress=None,
    partition_rows: int | None = None,
):
    """Predict PARAMS' dataset with its model and store the rows as dataset OUTPUT (on
    CLIENT's Dask cluster when given). Returns the stored Dataset row."""
    from sctk.pipeline import store
    from sctk.uq import batch, registry

    p = parse_params(params)
    row = registry.resolve(session, p["model"])
    batch.check_streams(row)
    ds = store.get(session, p["dataset"])
    lineage = {
        "origin": "prediction",
        "inputs": [{"name": ds.name, "sha256": ds.sha256, "rows": ds.rows}],
        "model": {"id": row.id, "name": row.name, "version": row.version, "sha256": row.sha256},
        "alpha": p["alpha"],
        "versions": store.versions(),
        "created_at": datetime.now(UTC).isoformat(),
    }
    existing = store.find(session, p["output"])
    if existing is not None:
        recorded = existing.lineage or {}
        same = (
            recorded.get("model") == lineage["model"]
            and recorded.get("inputs") == lineage["inputs"]
            and recorded.get("alpha") == lineage["alpha"]
        )
        if same:  # a retried job whose first try stored the result
            return existing
        raise Conflict(
            f"A dataset named '{p['output']}' already exists; choose another output name or "
            "delete it first."
        )
    frames = batch.predictions(home, row, ds, p["alpha"], client=client, progress=progress)
    # the input's partitions are kept: partition k of the output is partition k's rows
    try:
        rows = partition_rows or _partition_rows(home, ds)
    except Exception:  # a damaged footer: the verification says so in one sentence
        check = store.verify(home, ds)
        if check.status != "ok":
            batch.refuse(ds, check)
        raise
    written = store.write_partitions(home, p["output"], frames, rows)
    lineage["partition_rows"] = rows
    output = store.Output(p["output"], None, "parquet", lineage, written=written)
    try:
        [stored] = store.store(session, home, [output], "prediction", owner)
    finally:
        written.pending.discard()
    return stored.dataset


def _partition_rows(home: Path, ds) -> int:
    from sctk.pipeline import store

    if ds.format != "parquet":
        return store.PARTITION_ROWS
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(store.dataset_file(home, ds)).metadata
    return max((meta.row_group(0).num_rows if meta.num_row_groups else 0), 1)


def cluster_client(settings) -> AbstractContextManager[Any]:
    """A Dask client for the partitions when jobs run on Dask: the cluster this job runs on
    (from inside its worker), else the scheduler at executor.address; otherwise none (the
    partitions are computed here, one after the other)."""
    if settings.executor.kind != "dask":
        return nullcontext(None)
    try:
        from distributed import Client, get_worker, worker_client
    except ImportError:
        return nullcontext(None)
    try:
        get_worker()
    except ValueError:
        if settings.executor.address:
            return Client(settings.executor.address, timeout=10)
        return nullcontext(None)
    # the job's own task leaves its thread while its partitions run, or a cluster of
    # single-threaded workers would wait on itself
    return worker_client(separate_thread=True)


@job_kind(
    KIND,
    "Predict a whole dataset with a model and store the predictions as a dataset.",
    "models.predict",
    check=_check,
)
def uq_predict(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    from sctk.pipeline import store
    from sctk.uq.jobs import job_session

    with job_session(ctx) as (settings, session), cluster_client(settings) as client:
        ds = predict_dataset(
            session, Path(ctx.home), params, owner=ctx.owner, client=client,
            progress=ctx.progress,
        )  # fmt: skip
        ctx.log(f"stored {ds.rows} predictions as dataset {ds.name}, sha256 {ds.sha256[:12]}")
        return {"dataset": store.as_dict(ds)}
