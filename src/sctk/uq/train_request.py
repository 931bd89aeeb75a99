"""What a `uq.train` request asks for, whatever the kind of model: the dataset, the target, the
name, the calibration and the model's settings; each kind parses and trains the rest
(sctk.uq.model_kind: `parse_train`, `check_train`, `train`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sctk.errors import SctkError

METRICS_ALPHA = 0.1  # the alpha a new model's metrics are measured at
DEFAULT_FRACTION = 0.25  # held out when no calibration is given and CV+ does not apply
DEFAULT_KIND = "tabular"  # a config that names no kind


@dataclass
class TrainRequest:
    dataset: str
    target: str
    features: list[str] | None
    name: str
    config: dict[str, Any]  # the estimator's parameters, without 'kind'
    calibration: float | str | None  # None: CV+ below cv_below rows, else DEFAULT_FRACTION
    kind: str = DEFAULT_KIND
    input: str | None = None  # field models: the column of the input fields

    def to_params(self) -> dict[str, Any]:
        config = self.config if self.kind == DEFAULT_KIND else {"kind": self.kind, **self.config}
        params: dict[str, Any] = {
            "dataset": self.dataset,
            "target": self.target,
            "name": self.name,
            "config": config,
        }
        if self.calibration is not None:
            params["calibration"] = self.calibration
        if self.features is not None:
            params["features"] = self.features
        if self.input is not None:
            params["input"] = self.input
        return params

    @property
    def fraction(self) -> float:
        """The share of the dataset held out for calibration when no dataset is named."""
        return DEFAULT_FRACTION if self.calibration is None else float(self.calibration)


def model_name(params: dict[str, Any], dataset: str, target: str) -> str:
    """The name PARAMS give the model, else DATASET-TARGET made a valid name."""
    from sctk.pipeline.store import check_name

    name = params.get("name")
    if not name:
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{dataset}-{target}").strip("._-")[:120]
    return check_name(name)


def calibration_of(params: dict[str, Any]) -> float | str | None:
    """PARAMS' 'calibration': a fraction in (0, 1), a dataset's name, or None."""
    calibration = params.get("calibration")
    if calibration is None:
        return None
    if isinstance(calibration, bool) or not isinstance(calibration, int | float | str):
        raise SctkError("'calibration' must be a fraction between 0 and 1 or a dataset name.")
    if isinstance(calibration, int | float) and not 0.0 < float(calibration) < 1.0:
        raise SctkError(f"The calibration fraction must lie between 0 and 1; got {calibration}.")
    return calibration


def min_points_for_metrics() -> int:
    from sctk.uq.conformal import min_points

    return min_points(METRICS_ALPHA)


def finish(session, home, req: TrainRequest, model, scores, lineage, owner, progress, log_line):
    """Register the trained MODEL with its SCORES and LINEAGE as OWNER's; the row as a dict."""
    from sctk.uq import registry

    row = registry.save(
        session,
        home,
        model,
        req.name,
        config=registry.params_of(model),
        metrics=scores,
        lineage=lineage,
        owner=owner,
    )
    if log_line is not None:
        log_line(f"stored model '{row.name}' v{row.version} (id {row.id})")
    if progress is not None:
        progress(1.0, f"stored model '{row.name}' v{row.version}")
    return {"model": registry.as_dict(row)}
