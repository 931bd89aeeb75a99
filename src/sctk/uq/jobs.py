"""The `uq.train` job kind: train a model on a stored dataset and register it; the model's
kind (sctk.uq.model_kind; tabular unless the config names another) parses the request and
trains (sctk.uq.tabular_training, sctk.uq.field_training).

Parameters (JSON)::

    {"dataset": "runs",            # a stored dataset
     "target": "y",                # its target column
     "features": ["a", "b"],       # optional; default: every other numeric column
     "name": "drag",               # optional model name; default: DATASET-TARGET
     "config": {"epochs": 50},     # optional HybridRegressor parameters
     "calibration": 0.25}          # a fraction held out of DATASET, or a dataset's name;
                                   # absent: CV+ below cv_below rows, else 0.25

The model is recorded as the model of whoever submitted the job (ctx.owner).

A field model (FieldHybridRegressor, sctk.uq.field_training) is asked for with
`"config": {"kind": "field", ...}`: DATASET then holds one input field per row in the column
'input' (default "x") and its target field in TARGET (default "y"); 'features' does not apply.

The model's metrics (coverage, mean width, interval score at alpha 0.1) are measured on the
calibration split; with no 'calibration' given and fewer rows than `cv_below` (default 2,000)
every row trains and calibrates by CV+ (more rows: 0.25 of them held out), and the metrics
are cross-conformal (each row's interval from the fold model that did not see it). They
also record the method the model uses, and for `method = "auto"` every candidate's
validation interval score. A config's `group_by` may name a feature column (Mondrian
calibration per value of that column).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from sctk.errors import SctkError
from sctk.jobs.kinds import JobContext, job_kind
from sctk.uq.train_request import DEFAULT_KIND, TrainRequest

KIND = "uq.train"
_KEYS = {"dataset", "target", "input", "features", "name", "config", "calibration"}


def parse_params(params: dict[str, Any]) -> TrainRequest:
    """The request PARAMS describe, or one sentence naming what is wrong with them; the
    model's kind (config 'kind', default tabular) parses what is its own."""
    from sctk.uq.model_kind import MODEL_KINDS

    unknown = sorted(set(params) - _KEYS)
    if unknown:
        raise SctkError(
            f"uq.train does not know the parameter(s) {', '.join(unknown)}; use "
            f"{', '.join(sorted(_KEYS))}."
        )
    config = params.get("config") or {}
    if not isinstance(config, dict):
        raise SctkError("'config' must be an object of model parameters.")
    config = dict(config)
    kind = config.pop("kind", DEFAULT_KIND)
    if not isinstance(kind, str) or kind not in MODEL_KINDS:
        raise SctkError(
            f"The model kind must be one of {', '.join(sorted(MODEL_KINDS))}; got {kind!r}."
        )
    dataset = params.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        raise SctkError("uq.train needs 'dataset': the name of a stored dataset.")
    return MODEL_KINDS[kind].parse_train(params, dataset, config)


def check(session: Session, params: dict[str, Any]) -> TrainRequest:
    """Everything that can be checked before training: one sentence now, not a failed job."""
    from sctk.uq.model_kind import kind_named

    req = parse_params(params)
    kind_named(req.kind).check_train(session, req)
    return req


def train(
    session: Session,
    home: Path,
    params: dict[str, Any],
    progress=None,
    log_line=None,
    owner: str = "jobs",
    row_budget: int | None = None,
) -> dict[str, Any]:
    """Train and register the model PARAMS describe, as OWNER's; the registry row as a dict.

    A tabular dataset of more than ROW_BUDGET rows (default: uq.train_row_budget's) is
    trained on a seeded sample of that many rows, stratified on the target
    (sctk.uq.sampling)."""
    from sctk.uq.model_kind import kind_named

    req = parse_params(params)
    return kind_named(req.kind).train(session, home, req, owner, progress, log_line, row_budget)


@job_kind(
    KIND,
    "Train a hybrid UQ model on a dataset and register it.",
    "models.train",
    check=parse_params,
)
def uq_train(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    with job_session(ctx) as (settings, session):
        return train(
            session, Path(ctx.home), params, progress=ctx.progress, log_line=ctx.log,
            owner=ctx.owner, row_budget=settings.uq.train_row_budget,
        )  # fmt: skip


@contextmanager
def job_session(ctx: JobContext) -> Iterator[tuple[Any, Session]]:
    """(settings, session) for a UQ job in the process running it: the data directory's
    settings, a session on an engine of the job's own (disposed after), and the physics
    functions an admin listed admitted for its duration."""
    from sctk import config
    from sctk.storage.engine import one_off_session
    from sctk.uq import physics_registry

    settings = config.load(Path(ctx.home)).settings
    with (
        one_off_session(settings) as session,
        physics_registry.admitted(settings.uq.physics_allowed),
    ):
        yield settings, session
