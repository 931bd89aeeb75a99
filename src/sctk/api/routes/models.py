"""/api/v1/models: the UQ model registry; training as a job; predictions with intervals."""

from __future__ import annotations

import threading
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sctk.api.deps import SessionDep, require
from sctk.api.fastjson import FastJsonRoute
from sctk.errors import SctkError
from sctk.jobs import queue
from sctk.security.credentials import Principal

router = APIRouter(tags=["models"], route_class=FastJsonRoute)

ModelId = Path(ge=1, le=2**31 - 1, description="Id of the model.")
# what one request takes: the inline limits of the tabular and field kinds
# (uq.tabular_kind, uq.field_kind), repeated here so that the schema needs no model code
MAX_ROWS = 10_000
MAX_COLUMNS = 1_000
MAX_FIELDS = 256
# Up to this many rows a prediction is answered on the event loop (see `predict`): about
# 2 ms of CPU for a small model, less than one GIL handoff can cost under load.
INLINE_ROWS = 2_000


_torch_threads = threading.local()


def _one_torch_thread() -> None:
    """Run torch on one intra-op thread in this thread of the server's pool.

    The server answers predictions on its thread pool, several at once; torch's own threads
    on top only oversubscribe the cores. The setting is per thread (OpenMP keeps it per
    thread: one set in another thread does not apply here), so each pool thread sets it
    once. Measured on 2 cores, a 1,000-row prediction of a small tabular model: 5 ms of CPU
    with torch's default of 2 threads, 0.6 ms with 1.
    """
    if not getattr(_torch_threads, "done", False):
        import torch

        torch.set_num_threads(1)
        _torch_threads.done = True


class ModelOut(BaseModel):
    id: int
    name: str
    version: int
    kind: str
    path: str
    sha256: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    owner: str
    created_at: str | None


class TrainIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, max_length=120, description="The training dataset.")
    target: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="The column to predict (required for tabular models; field models: 'y').",
    )
    input: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Field models: the column of the input fields (default 'x').",
    )
    features: list[str] | None = Field(
        None, min_length=1, max_length=MAX_COLUMNS, description="Default: other numeric columns."
    )
    name: str | None = Field(None, max_length=120, description="Default: DATASET-TARGET.")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Model parameters: HybridRegressor's (epochs, hidden, ...), or with "
        '"kind": "field" a field model\'s (physics, dx, width, epochs, ...). A physics is a '
        "registered name (built-in, a 'sctk.physics' entry point, or [uq] physics_allowed); "
        "size-like settings have bounds (sctk.uq.bounds).",
    )
    calibration: float | str | None = Field(
        None,
        description="A fraction of the dataset held out, or a calibration dataset's name; "
        "default: CV+ over folds of every row below the model's cv_below rows (2,000), else 0.25.",
    )


class TrainAccepted(BaseModel):
    job: int
    kind: str
    status: str


class PredictIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[Annotated[dict[str, float | None], Field(max_length=MAX_COLUMNS)]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_ROWS,
        description="Tabular models: feature values, one object a row.",
    )
    fields: list[Any] | None = Field(
        None,
        min_length=1,
        max_length=MAX_FIELDS,
        description="Field models: velocity fields as nested lists [B, C, H, W].",
    )
    dataset: str | None = Field(None, min_length=1, max_length=120, description="Or a dataset.")
    alpha: float = Field(0.1, description="Miscoverage in (0, 1): intervals cover 1 - alpha.")

    @model_validator(mode="after")
    def _one_source(self) -> PredictIn:
        given = [x is not None for x in (self.rows, self.fields, self.dataset)]
        if sum(given) != 1:
            raise ValueError(
                "give exactly one of 'rows', 'fields' or 'dataset' (not both, not none)"
            )
        return self


class PredictOut(BaseModel):
    model: dict[str, Any]
    kind: str = Field(
        "tabular", description="'tabular' (one value a row) or 'field' ([B, C, H, W])."
    )
    alpha: float
    alpha_used: float | None = Field(
        None,
        description="The miscoverage the intervals were built at: alpha, or in adaptive mode "
        "the model's alpha_t (PUT .../adaptive).",
    )
    observed: list[float | None] | None = Field(
        None,
        description="A dataset's true values of a tabular model's target, when it holds them.",
    )
    rows: int = Field(description="Rows, or fields of a field model.")
    shape: list[int] | None = Field(None, description="Field models: [C, H, W] of a field.")
    mean: list[Any]
    lower: list[Any]
    upper: list[Any]
    sigma: list[Any]
    psi: list[float] = Field(description="The confidence score, one per row or field.")
    cached: bool


@router.get("/models", response_model=list[ModelOut], summary="Registered models.")
def list_models(session: SessionDep, _user=require("read")) -> list[dict[str, Any]]:
    from sctk.uq import registry

    return [registry.as_dict(r) for r in registry.list_models(session)]


@router.post(
    "/models",
    response_model=TrainAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Train a model: queues a uq.train job; follow it under /api/v1/jobs/{id}.",
)
def train_model(
    request: Request,
    body: TrainIn,
    session: SessionDep,
    user: Principal = require("models.train"),
) -> TrainAccepted:
    from sctk.uq import jobs as uq_jobs
    from sctk.uq import physics_registry

    params = body.model_dump(exclude_none=True)
    with physics_registry.admitted(request.app.state.settings.uq.physics_allowed):
        checked = uq_jobs.check(session, params).to_params()
        job = queue.submit(session, uq_jobs.KIND, checked, owner=user.username)
    answer = TrainAccepted(job=job.id, kind=uq_jobs.KIND, status=job.status)
    session.commit()  # before answering: a client may poll the job at once
    return answer


@router.get(
    "/models/{model_id}/evaluation",
    summary="The model's newest evaluation on labelled data (`sctk uq evaluate`), or null.",
)
def model_evaluation(
    request: Request, session: SessionDep, _user=require("read"), model_id: int = ModelId
) -> dict[str, Any]:
    from sctk.uq import evaluation, registry

    row = registry.get(session, model_id)  # 404 for an unknown model
    report = evaluation.latest_reports(request.app.state.settings.home).get(row.id)
    if report is not None:
        # no server paths out: the report's own location (and where --out wrote it), and a
        # file's directory
        report = {k: v for k, v in report.items() if k not in ("path", "written_to")}
        if "file" in (report.get("data") or {}):
            report["data"] = {**report["data"], "file": PurePath(report["data"]["file"]).name}
    return {"model": {"id": row.id, "name": row.name, "version": row.version}, "evaluation": report}


class EvaluateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(
        min_length=1, max_length=120, description="A stored dataset holding the target."
    )
    alpha: float = Field(0.1, description="Miscoverage in (0, 1): intervals cover 1 - alpha.")


@router.post(
    "/models/{model_id}/evaluate",
    summary="Score the model on a stored dataset with known targets (as `sctk uq evaluate`).",
    description=(
        "Coverage, mean width, interval score, Gaussian NLL, CRPS, the calibration curve and "
        "a summary of psi, on a stored dataset holding the model's target (at most "
        f"{MAX_ROWS:,} rows; larger ones: `sctk uq evaluate`). The report is kept on the "
        "server (the dashboard's calibration panel and GET .../evaluation show the newest)."
    ),
)
def evaluate_model(
    request: Request,
    body: EvaluateIn,
    session: SessionDep,
    _user=require("models.predict"),
    model_id: int = ModelId,
) -> dict[str, Any]:
    from sctk.pipeline import store
    from sctk.uq import evaluation, registry
    from sctk.uq.inputs import is_file
    from sctk.uq.model_kind import kind_of

    row = registry.get(session, model_id)  # 404 for an unknown model
    if is_file(body.dataset):  # the CLI may read a server-side file; a client may not
        raise SctkError(
            f"'{body.dataset}' names a file; the API evaluates stored datasets only: upload "
            "it first (POST /api/v1/datasets)."
        )
    ds = store.get(session, body.dataset)
    limit = kind_of(row).inline_limit
    if ds.rows > limit:
        raise SctkError(
            f"Dataset '{ds.name}' has {ds.rows} rows, more than the {limit} one request "
            "evaluates on; use 'sctk uq evaluate'."
        )
    _one_torch_thread()
    result = evaluation.evaluate(
        session, request.app.state.settings.home, row.id, ds.name, body.alpha
    )
    # no server paths out: the report's files by name only
    result["report"] = {k: PurePath(v).name for k, v in result["report"].items()}
    return result


@router.get("/models/{model_id}", response_model=ModelOut, summary="One model.")
def show_model(
    session: SessionDep, _user=require("read"), model_id: int = ModelId
) -> dict[str, Any]:
    from sctk.uq import registry

    return registry.as_dict(registry.get(session, model_id))


@router.delete(
    "/models/{model_id}",
    response_model=ModelOut,
    summary="Delete a model, its files and its cached predictions.",
)
def delete_model(
    request: Request,
    session: SessionDep,
    user: Principal = require("models.train"),
    model_id: int = ModelId,
) -> dict[str, Any]:
    from sctk.uq import cache, registry

    settings = request.app.state.settings
    return registry.delete(
        session,
        settings.home,
        model_id,
        cache=cache.get_cache(settings.cache),
        actor=user.username,
    )


@router.post(
    "/models/{model_id}/predict",
    response_model=PredictOut,
    summary="Mean, calibrated interval, sigma and psi for rows or a stored dataset.",
)
async def predict(
    request: Request,
    body: PredictIn,
    _user=require("models.predict"),
    model_id: int = ModelId,
) -> dict[str, Any]:
    # With local I/O, rows of a tabular model are answered on the event loop itself. The
    # work is about a millisecond of CPU for 1,000 rows and holds the GIL for most of it, so
    # a worker thread gains no parallelism; it only adds handoffs. Worse, each call that
    # releases the GIL (the database, the model file, every torch op) must win it back from
    # the busy event loop, which waits out the interpreter's 5 ms switch interval: under 8
    # concurrent clients that convoy, not the work, made most of the predict route's p99.
    # Datasets and fields (files to read, convolutions that run long without the GIL), and
    # any request that talks to a server, go to the thread pool in ONE call that opens its
    # own session.
    state = request.app.state
    _check_size(body, state.settings.data.max_predict_cells)
    if body.rows is not None and len(body.rows) <= INLINE_ROWS and _local_io(state):
        return _predict(state, body, model_id)
    return await run_in_threadpool(_predict, state, body, model_id)


def _check_size(body: PredictIn, max_cells: int) -> None:
    """Refuse rows holding more values than data.max_predict_cells, before any work."""
    from sctk.pipeline.limits import TooLarge

    cells = sum(len(r) for r in body.rows) if body.rows is not None else 0
    if cells > max_cells:
        raise TooLarge(
            f"The request holds {cells:,} values, over the limit of {max_cells:,} "
            "(data.max_predict_cells); send fewer rows a request, or predict a stored dataset "
            "of any size with the uq.predict job (POST /api/v1/jobs)."
        )


def _local_io(state: Any) -> bool:
    """Whether a prediction's I/O stays on this machine's disk (SQLite, the in-process cache).
    A PostgreSQL or Redis server that stalls must stall one worker thread, not the event
    loop and every request waiting on it."""
    return state.settings.cache.url is None and state.engine.url.get_backend_name() == "sqlite"


def _predict(state: Any, body: PredictIn, model_id: int) -> dict[str, Any]:
    from sctk.pipeline import store
    from sctk.uq import cache, prediction, registry
    from sctk.uq.conformal import check_alpha
    from sctk.uq.model_kind import kind_of

    settings = state.settings
    check_alpha(body.alpha)
    _one_torch_thread()
    with state.sessionmaker() as session:
        row = registry.get(session, model_id)
        kind = kind_of(row)
        c = cache.get_cache(settings.cache)
        if body.rows is not None or body.fields is not None:
            X = kind.from_request(row, body.rows, body.fields)
            return prediction.predict(session, settings.home, row, X, body.alpha, c, "The input")
        ds = store.get(session, body.dataset)
        what = f"Dataset '{body.dataset}'"
        # the stored count, so that a large dataset is refused without reading it
        if ds.rows > kind.inline_limit:
            raise SctkError(
                f"{what} has {ds.rows} rows, more than the {kind.inline_limit} one request "
                "predicts; use 'sctk uq predict' or split it."
            )
        frame = store.read(settings.home, ds)
        out = prediction.predict_frame(session, settings.home, row, frame, body.alpha, c, what)
    return {**out, "observed": kind.observed(row, frame)}
