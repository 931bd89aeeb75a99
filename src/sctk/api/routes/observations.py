"""/api/v1/models/{id}/observations and /adaptive: true values seen in production, the
rolling coverage they give, and the adaptive conformal mode (sctk.uq.observations)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sctk.api.deps import SessionDep, require
from sctk.api.routes.models import MAX_COLUMNS, ModelId, _one_torch_thread
from sctk.errors import SctkError
from sctk.security.credentials import Principal
from sctk.uq.observations import MAX_ROWS

router = APIRouter(tags=["models"])


class ObserveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[Annotated[dict[str, float | None], Field(max_length=MAX_COLUMNS + 1)]] | None = (
        Field(
            None,
            min_length=1,
            max_length=MAX_ROWS,
            description="Rows of the model's features, each with its true value under the "
            "model's target name, in the order they were observed.",
        )
    )
    dataset: str | None = Field(
        None, min_length=1, max_length=120, description="Or a stored dataset holding the target."
    )
    alpha: float = Field(
        0.1, description="Miscoverage of the intervals checked (adaptive mode: its own alpha)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> ObserveIn:
        if (self.rows is None) == (self.dataset is None):
            raise ValueError("give exactly one of 'rows' or 'dataset' (not both, not none)")
        return self


class AdaptiveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(description="Turn adaptive conformal inference on or off.")
    alpha: float = Field(0.1, description="The target miscoverage alpha_t starts at and tracks.")
    gamma: float | None = Field(None, description="The step; default uq.adaptive_gamma.")


@router.post(
    "/models/{model_id}/observations",
    summary="Record true values for rows the model predicts; the rolling coverage and its test.",
    description=(
        "Each row holds the model's features and its true value (under the target's name). "
        "The model predicts the rows; each value is checked against its interval and stored. "
        "The answer holds the batch's coverage, the model's rolling coverage over the last "
        "uq.coverage_window observations, the one-sided binomial test behind the coverage "
        "alert, and the adaptive state (alpha_t) in adaptive mode."
    ),
)
async def observe(
    request: Request,
    body: ObserveIn,
    user: Principal = require("models.predict"),
    model_id: int = ModelId,
) -> dict[str, Any]:
    return await run_in_threadpool(_observe, request.app.state, body, model_id, user.username)


def _observe(state: Any, body: ObserveIn, model_id: int, actor: str) -> dict[str, Any]:
    from sctk.uq import observations, registry
    from sctk.uq.conformal import check_alpha
    from sctk.uq.inputs import is_file

    check_alpha(body.alpha)
    _one_torch_thread()
    settings = state.settings
    with state.sessionmaker() as session:
        row = registry.get(session, model_id)
        if body.rows is not None:
            X, y = observations.rows_inputs(row, body.rows)
        else:
            if is_file(body.dataset):
                raise SctkError(
                    f"'{body.dataset}' names a file; observations come as rows or a stored "
                    "dataset (POST /api/v1/datasets)."
                )
            X, y = observations.dataset_inputs(session, settings.home, row, body.dataset)
        return observations.record(session, settings, row, X, y, body.alpha, actor=actor)


@router.get(
    "/models/{model_id}/observations",
    summary="The newest observations, the rolling coverage after each, and the current test.",
)
def list_observations(
    request: Request, session: SessionDep, _user=require("read"), model_id: int = ModelId
) -> dict[str, Any]:
    from sctk.uq import observations, registry

    row = registry.get(session, model_id)
    return observations.series(session, row, request.app.state.settings.uq)


@router.put(
    "/models/{model_id}/adaptive",
    summary="Turn the model's adaptive conformal mode (Gibbs and Candes 2021) on or off.",
)
def set_adaptive(
    request: Request,
    body: AdaptiveIn,
    session: SessionDep,
    user: Principal = require("models.train"),
    model_id: int = ModelId,
) -> dict[str, Any]:
    from sctk.uq import observations, registry

    row = registry.get(session, model_id)
    uq = request.app.state.settings.uq
    state = observations.set_adaptive(
        session, row, body.enabled, body.alpha, body.gamma, uq.adaptive_gamma, user.username
    )
    return {"model": {"id": row.id, "name": row.name, "version": row.version}, "adaptive": state}
