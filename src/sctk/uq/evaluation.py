"""Evaluating and recalibrating registered models on data that holds the true values.

`evaluate` writes a report (sctk.uq.report: JSON with coverage, width, interval score, NLL,
CRPS, the calibration curve; two PNG plots) of a model on a dataset or .npz file.
`recalibrate` recomputes a model's conformal scores on new data in place (see
registry.replace_calibration for why in place rather than as a new version).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from sctk.errors import SctkError
from sctk.uq import conditional, metrics, registry, report
from sctk.uq.conformal import ConformalCalibrator, check_alpha, min_points
from sctk.uq.inputs import load_inputs
from sctk.uq.model_kind import kind_of
from sctk.uq.train_request import METRICS_ALPHA

REPORTS_DIR = "reports/uq"


def default_directory(home: Path, name: str, version: int) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return Path(home) / REPORTS_DIR / f"{name}-v{version}-{stamp}"


def psi_summary(psi: np.ndarray) -> dict[str, float]:
    psi = np.asarray(psi, dtype=np.float64).reshape(-1)
    return {
        "mean": float(psi.mean()),
        "min": float(psi.min()),
        "median": float(np.median(psi)),
        "max": float(psi.max()),
    }


def evaluate(
    session: Session,
    home: Path,
    ref: str | int,
    data: str,
    alpha: float = 0.1,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Score model REF on DATA at ALPHA and write the report; the scores and file paths."""
    alpha = check_alpha(alpha)
    row = registry.resolve(session, ref)
    inputs = load_inputs(session, home, row, data, need_target=True)
    model = registry.load(home, row)
    out = model.predict_interval(inputs.X, alpha=alpha)  # refuses a too-small calibration set
    mean, sigma = out["mean"], out["sigma"]
    calibrator: ConformalCalibrator = model.calibrator_
    # the calibration curve asks for levels down to alpha 0.05: the model's own conformal
    # intervals where its calibration set is large enough, else the Gaussian ones of sigma
    if calibrator.n >= min_points(0.05):
        curve_source = "conformal"
        if hasattr(model, "interval_function"):  # tabular: any score, CV+, groups
            interval_at = model.interval_function(inputs.X)[1]
        else:

            def interval_at(a: float):
                return calibrator.interval(mean, sigma, a)
    else:
        curve_source, interval_at = "gaussian", None
    directory = (
        Path(out_dir) if out_dir is not None else default_directory(home, row.name, row.version)
    )
    if directory.exists() and not directory.is_dir():
        raise SctkError(f"{directory} exists and is not a directory; choose another --out.")
    # one input column: the report draws the intervals against it
    x = inputs.X[:, 0] if inputs.X.ndim == 2 and inputs.X.shape[1] == 1 else None
    extra = {
        "model": {"id": row.id, "name": row.name, "version": row.version, "kind": row.kind},
        "data": inputs.source,
        "calibration_curve_source": curve_source,
        "psi": psi_summary(out["psi"]),
        "coverage_by_width_decile": conditional.by_width_decile(
            inputs.y, out["lower"], out["upper"]
        ),
    }
    extra.update(kind_of(row).evaluation_extra(row, model, inputs.X, inputs.y, out))
    title = f"'{row.name}' v{row.version} on {inputs.what.replace('Dataset ', '')}"
    try:
        paths = report.write_report(
            directory, inputs.y, out, alpha, title, x=x, interval_at=interval_at, extra=extra
        )
    except OSError as exc:
        raise SctkError(f"Cannot write the report to {directory}: {exc.strerror}.") from None
    _record_elsewhere(home, row, paths["json"])
    scores = report.evaluate(inputs.y, out, alpha, interval_at)
    return {**extra, **scores, "report": {k: str(v) for k, v in paths.items()}}


def _record_elsewhere(home: Path, row, written: Path) -> None:
    """Keep a copy of report.json under reports/uq/ when --out put the report elsewhere:
    the dashboard's calibration panel and the coverage metric look there (latest_reports),
    and still find it when that directory is moved or deleted."""
    import json

    from sctk.fsutil import atomic_write

    where = written.parent.resolve()
    if where.parent == (Path(home) / REPORTS_DIR).resolve():
        return  # already where latest_reports looks
    doc = json.loads(written.read_text(encoding="utf-8"))
    doc["written_to"] = str(where)
    record = default_directory(home, row.name, row.version) / "report.json"
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(record, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise SctkError(
            f"The report is in {where}, but its record in {record.parent} could not be "
            f"written: {exc.strerror}."
        ) from None


def calibration_metrics(y: np.ndarray, out: dict[str, np.ndarray], n: int) -> dict[str, Any]:
    return {
        "alpha": METRICS_ALPHA,
        "coverage": metrics.coverage(y, out["lower"], out["upper"]),
        "mean_width": metrics.mean_width(out["lower"], out["upper"]),
        "interval_score": metrics.interval_score(y, out["lower"], out["upper"], METRICS_ALPHA),
        "n_calibration": int(n),
    }


def recalibrate(
    session: Session,
    home: Path,
    ref: str | int,
    data: str,
    cache: Any = None,
    actor: str = "system",
) -> dict[str, Any]:
    """Recompute model REF's conformal scores on DATA, in place; the updated row as a dict."""
    row = registry.resolve(session, ref)
    inputs = load_inputs(session, home, row, data, need_target=True)
    need = min_points(METRICS_ALPHA)
    if inputs.y.size < need:  # a field contributes each of its values
        unit = kind_of(row).value_unit
        raise SctkError(
            f"{inputs.what} has {inputs.y.size} {unit}, too few to calibrate for intervals at "
            f"alpha {METRICS_ALPHA}: it needs at least {need}; use a larger dataset."
        )
    model = registry.load(home, row, private=True)  # changed below: not the shared one
    model.calibrate(inputs.X, inputs.y)  # tabular or field, each with its own scores
    out = model.predict_interval(inputs.X, alpha=METRICS_ALPHA)
    scores = calibration_metrics(inputs.y, out, inputs.y.size)
    row = registry.replace_calibration(
        session, home, row, model, {**inputs.source, "recalibrated": True}, scores, cache, actor
    )
    return registry.as_dict(row)


def latest_reports(home: Path, max_age_days: float = 30.0) -> dict[int, dict[str, Any]]:
    """The newest evaluation report of each model (by id), from reports/uq/ (where a report
    written with --out elsewhere leaves its copy), when it is younger than MAX_AGE_DAYS: the
    coverage its intervals had on labelled data lately."""
    import json
    from datetime import UTC, datetime, timedelta

    cutoff = datetime.now(UTC) - timedelta(days=max_age_days)
    newest: dict[int, dict[str, Any]] = {}
    for path in (Path(home) / REPORTS_DIR).glob("*/report.json"):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            model_id = int(doc["model"]["id"])
            created = datetime.fromisoformat(doc["created_at"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a report being written, or not one of ours
        if created < cutoff:
            continue
        known = newest.get(model_id)
        # ties (reports stamped to the second by older versions) go to the later directory
        # name, which carries microseconds
        if known is None or (created, path.parent.name) > (
            datetime.fromisoformat(known["created_at"]),
            Path(known["path"]).parent.name,
        ):
            newest[model_id] = {**doc, "path": str(path)}
    return newest
