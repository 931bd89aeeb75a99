"""Coverage watched in production: true values observed for a model's rows, the rolling
coverage of its intervals over the newest of them, and the test behind the coverage alert.

Predictions are not stored (the predict route is answered from a cache, often on the event
loop), so an observation is a row of features with its true value: the model predicts the
row when it is observed and the interval it gives then is what the true value is checked
against. That is the interval the model gives for the row now (the same network and
calibration, hence the same interval as an earlier prediction of that row at that alpha),
and in adaptive mode it is exactly the protocol of adaptive conformal inference: build the
interval at alpha_t, see the value, update alpha_t (sctk.uq.adaptive_alpha).

The alert asks for evidence, not a bare threshold: with k misses among the n newest
observations of the current calibration, and the promised miss rate alpha, the one-sided
binomial test's p-value is P(X >= k) for X ~ Binomial(n, alpha). Below
`uq.coverage_alert_level` (and with at least `uq.coverage_min_observations`), the model's
coverage is below target with that confidence, and `uq.coverage_low` is published on the
bus: the alerting of the served app (sctk.monitoring.watch) raises a warning alert for it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from sctk.errors import SctkError
from sctk.storage.models import UqAdaptive, UqModel, UqObservation
from sctk.uq import adaptive_alpha, registry, tabular_inputs
from sctk.uq.conformal import check_alpha, min_points
from sctk.uq.scores import SplitCalibrator

log = logging.getLogger(__name__)
MAX_ROWS = 10_000
COVERAGE_LOW = "uq.coverage_low"


# --- input --------------------------------------------------------------------------------


def _recalibratable(row: UqModel, model: Any) -> None:
    """Observations keep each row's mean and sigma, not its features: enough for the scores
    built on them, not for CQR (the quantile learners' band) or per-group calibration."""
    score = getattr(getattr(model, "score_", None), "name", "normalised")
    if score not in ("normalised", "plain") or getattr(model, "group_by", None) is not None:
        what = f"the {score} score" if score not in ("normalised", "plain") else "groups"
        raise SctkError(
            f"Model {registry.label(row)} is calibrated with {what}, which needs each row's "
            "features, and observations keep only their predictions; recalibrate it with "
            f"'sctk uq calibrate {row.name} --data DATASET' instead."
        )


def _tabular(row: UqModel) -> None:
    from sctk.uq.model_kind import kind_of

    if not kind_of(row).observes:
        raise SctkError(
            f"Model {registry.label(row)} is a {row.kind} model; observations are taken for "
            "tabular models (rows of features with their true value)."
        )


def target_name(row: UqModel) -> str:
    return str((row.lineage or {}).get("target") or "")


def rows_inputs(row: UqModel, rows: list[dict[str, float | None]]) -> tuple[np.ndarray, np.ndarray]:
    """Features X and true values y of ROWS (objects holding the features and the target)."""
    _tabular(row)
    target = target_name(row)
    if rows and any(target not in r for r in rows):
        first = next(i for i, r in enumerate(rows) if target not in r)
        raise SctkError(
            f"Row {first} has no '{target}', the target of model {registry.label(row)}; "
            "each observation needs its true value."
        )
    X = tabular_inputs.rows_matrix(rows, tabular_inputs.features_of(row), "The rows")
    y = np.array([r.get(target) for r in rows], dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise SctkError(
            f"The rows hold a missing, NaN or infinite '{target}' (first at row {int(bad[0])}); "
            "send finite true values."
        )
    return X, y


def dataset_inputs(
    session: Session, home: Path, row: UqModel, data: str
) -> tuple[np.ndarray, np.ndarray]:
    """Features X and true values y from a stored dataset holding the target."""
    from sctk.uq.inputs import load_inputs

    _tabular(row)
    inputs = load_inputs(session, home, row, data, need_target=True)
    return inputs.X, inputs.y


# --- recording ----------------------------------------------------------------------------


def record(
    session: Session,
    settings: Any,
    row: UqModel,
    X: np.ndarray,
    y: np.ndarray,
    alpha: float = 0.1,
    actor: str = "system",
    publish: bool = True,
) -> dict[str, Any]:
    """Predict X with model ROW, check each y against its interval, store the observations
    (in row order) and, in adaptive mode, move alpha_t; commit. The batch's coverage, the
    model's rolling coverage and test, and the adaptive state."""
    _tabular(row)
    if X.shape[0] > MAX_ROWS:
        raise SctkError(
            f"{X.shape[0]} observations in one call, more than the {MAX_ROWS} one takes; split "
            "them."
        )
    model = registry.load(settings.home, row)
    adaptive = session.get(UqAdaptive, row.id)
    if adaptive is not None and adaptive.enabled:
        alpha = adaptive.alpha
        # each row's interval at the alpha_t of its turn, from the model's own calibration
        given, interval_at = model.interval_function(X)
        mean, sigma = given["mean"], given["sigma"]
        n_cal = int((row.metrics or {}).get("n_calibration") or 0)
        out = adaptive_alpha.run(interval_at, n_cal, y, alpha, adaptive.gamma, adaptive.alpha_t)
        lower, upper, used, covered = out.lower, out.upper, out.alpha_used, out.covered
        adaptive.alpha_t = out.alpha_next
        adaptive.steps += int(y.size)
        adaptive.updated_at = datetime.now(UTC)
    else:
        alpha = check_alpha(alpha)
        # the model's own intervals, exactly as a prediction gives them (refuses an alpha
        # its calibration set is too small for)
        given = model.predict_interval(X, alpha=alpha)
        mean, sigma, lower, upper = given["mean"], given["sigma"], given["lower"], given["upper"]
        used = np.full(y.size, alpha)
        covered = (y >= lower) & (y <= upper)
    now = datetime.now(UTC)
    who = str(actor)[:64]
    session.execute(
        insert(UqObservation),
        [
            {
                "model_id": row.id,
                "at": now,
                "y": float(y[i]),
                "mean": float(mean[i]),
                "sigma": float(sigma[i]),
                "lower": float(lower[i]),
                "upper": float(upper[i]),
                "alpha": float(alpha),
                "alpha_used": float(used[i]),
                "covered": bool(covered[i]),
                "sha256": row.sha256,
                "actor": who,
            }
            for i in range(y.size)
        ],
    )
    session.commit()
    window = rolling(session, row, settings.uq)
    if publish and window["low"]:
        announce(settings, row, window)
    return {
        "model": {"id": row.id, "name": row.name, "version": row.version},
        "recorded": int(y.size),
        "alpha": float(alpha),
        "batch_coverage": float(np.mean(covered)),
        "window": window,
        "adaptive": adaptive_dict(adaptive),
    }


def announce(settings: Any, row: UqModel, window: dict[str, Any]) -> None:
    """Publish COVERAGE_LOW on the bus, for the alerting of the served app."""
    try:
        from sctk.bus import get_bus

        get_bus(settings).publish(
            COVERAGE_LOW,
            {
                "model": f"{row.name}:{row.version}",
                "model_id": row.id,
                "coverage": window["coverage"],
                "target": window["target"],
                "n": window["n"],
                "p_value": window["p_value"],
            },
        )
    except Exception:  # the observations are stored; the announcement is best effort
        log.exception("could not announce the low coverage of model %s", registry.label(row))


# --- the rolling window and its test ------------------------------------------------------


def _window_rows(session: Session, row: UqModel, n: int) -> list[UqObservation]:
    """The N newest observations of ROW's current calibration, oldest first."""
    return _newest(session, row, n, UqObservation.sha256 == row.sha256)


def _newest(session: Session, row: UqModel, n: int, *where: Any) -> list[UqObservation]:
    """The N newest observations of ROW (of any calibration unless WHERE narrows them),
    oldest first."""
    newest = (
        select(UqObservation)
        .where(UqObservation.model_id == row.id, *where)
        .order_by(UqObservation.id.desc())
        .limit(n)
    )
    return list(reversed(session.scalars(newest).all()))


def binomial_p_value(misses: int, n: int, alpha: float) -> float:
    """P(X >= misses) for X ~ Binomial(n, alpha): how unlikely this many misses are if the
    intervals miss at the promised rate alpha."""
    if n == 0 or misses == 0:
        return 1.0
    return float(stats.binom.sf(misses - 1, n, alpha))


def coverage_test(covered: np.ndarray, alpha: float, level: float, minimum: int) -> dict[str, Any]:
    """Coverage of the boolean array COVERED and the one-sided binomial test against 1 -
    ALPHA at LEVEL (made only with at least MINIMUM observations)."""
    n = int(covered.size)
    misses = int(n - np.count_nonzero(covered))
    p = binomial_p_value(misses, n, alpha)
    return {
        "n": n,
        "misses": misses,
        "coverage": float(1.0 - misses / n) if n else None,
        "target": float(1.0 - alpha),
        "p_value": p,
        "level": float(level),
        "tested": n >= minimum,
        "low": bool(n >= minimum and p < level),
    }


def rolling(session: Session, row: UqModel, uq: Any) -> dict[str, Any]:
    """ROW's rolling coverage over its newest `uq.coverage_window` observations and the test."""
    rows = _window_rows(session, row, uq.coverage_window)
    covered = np.array([o.covered for o in rows], dtype=bool)
    # the promised miss rate: the target alpha the observations were asked at (their mean,
    # should it have changed within the window)
    alpha = float(np.mean([o.alpha for o in rows])) if rows else 0.1
    out = coverage_test(covered, alpha, uq.coverage_alert_level, uq.coverage_min_observations)
    out["window"] = int(uq.coverage_window)
    return out


def series(session: Session, row: UqModel, uq: Any, limit: int = 1000) -> dict[str, Any]:
    """For the model page: the newest LIMIT observations (all calibrations), the rolling
    coverage after each, and the current window's test."""
    obs = _newest(session, row, limit)
    covered = np.array([o.covered for o in obs], dtype=np.float64)
    w = int(uq.coverage_window)
    csum = np.concatenate([[0.0], np.cumsum(covered)])
    idx = np.arange(1, covered.size + 1)
    start = np.maximum(idx - w, 0)
    roll = (csum[idx] - csum[start]) / (idx - start) if covered.size else np.empty(0)
    total = session.scalar(
        select(func.count()).select_from(UqObservation).where(UqObservation.model_id == row.id)
    )
    return {
        "model": {"id": row.id, "name": row.name, "version": row.version},
        "total": int(total or 0),
        "observations": [
            {
                "id": o.id,
                "at": o.at.isoformat(),
                "y": o.y,
                "mean": o.mean,
                "lower": o.lower,
                "upper": o.upper,
                "alpha_used": o.alpha_used,
                "covered": o.covered,
                "rolling_coverage": float(roll[i]),
            }
            for i, o in enumerate(obs)
        ],
        "window": rolling(session, row, uq),
        "adaptive": adaptive_dict(session.get(UqAdaptive, row.id)),
    }


def all_windows(session: Session, uq: Any) -> list[tuple[UqModel, dict[str, Any]]]:
    """(model, rolling window) of every model with observations of its current calibration."""
    ids = session.scalars(select(UqObservation.model_id).distinct()).all()
    out = []
    for model_id in sorted(ids):
        row = session.get(UqModel, model_id)
        if row is not None:
            window = rolling(session, row, uq)
            if window["n"]:
                out.append((row, window))
    return out


# --- adaptive mode ------------------------------------------------------------------------


def adaptive_dict(state: UqAdaptive | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {
        "enabled": bool(state.enabled),
        "alpha": state.alpha,
        "gamma": state.gamma,
        "alpha_t": state.alpha_t,
        "steps": state.steps,
        "updated_at": state.updated_at.isoformat() if state.updated_at else None,
    }


def adaptive_state(session: Session, row: UqModel) -> dict[str, Any] | None:
    return adaptive_dict(session.get(UqAdaptive, row.id))


def set_adaptive(
    session: Session,
    row: UqModel,
    enabled: bool,
    alpha: float = 0.1,
    gamma: float | None = None,
    default_gamma: float = adaptive_alpha.DEFAULT_GAMMA,
    actor: str = "system",
) -> dict[str, Any] | None:
    """Turn ROW's adaptive mode on (alpha_t starting at ALPHA) or off; commit (audited)."""
    from sctk.security import audit_log

    _tabular(row)
    state = session.get(UqAdaptive, row.id)
    if enabled:
        alpha = check_alpha(alpha)
        gamma = adaptive_alpha.check_gamma(default_gamma if gamma is None else gamma)
        if state is None:
            state = UqAdaptive(model_id=row.id, steps=0)
            session.add(state)
        state.enabled, state.alpha, state.gamma, state.alpha_t = True, alpha, gamma, alpha
        state.steps = 0
        state.updated_at = datetime.now(UTC)
    elif state is not None:
        state.enabled = False
    audit_log.record(
        session,
        "model.adaptive",
        actor=actor,
        target=f"{row.name}:{row.version}",
        details={"id": row.id, "enabled": enabled, "alpha": alpha, "gamma": gamma},
    )
    session.commit()
    return adaptive_dict(state)


# --- recalibration from observations ------------------------------------------------------


def recalibrate(
    session: Session,
    settings: Any,
    row: UqModel,
    cache: Any = None,
    actor: str = "system",
) -> dict[str, Any]:
    """Recompute ROW's conformal scores from its newest `uq.coverage_window` observations
    (of any calibration: the network, hence each observation's mean and sigma, is the same);
    in place, as `sctk uq calibrate --data` does. Adaptive mode restarts at its alpha."""
    from sctk.uq.evaluation import METRICS_ALPHA

    _tabular(row)
    n = int(settings.uq.coverage_window)
    obs = _newest(session, row, n)
    need = min_points(METRICS_ALPHA)
    if len(obs) < need:
        raise SctkError(
            f"Model {registry.label(row)} has {len(obs)} observation(s), too few to calibrate "
            f"from: it needs at least {need}; record more with 'sctk uq observe'."
        )
    y = np.array([o.y for o in obs])
    mean = np.array([o.mean for o in obs])
    sigma = np.array([o.sigma for o in obs])
    model = registry.load(settings.home, row, private=True)  # changed below
    _recalibratable(row, model)
    # a normalised or plain score needs only each observation's mean and sigma (the
    # interval's centre and spread for these scores), which the observations keep
    model.calibrator_ = SplitCalibrator(score=model.score_).fit(y, mean, sigma)
    model.mode_ = "split"
    lower, upper = model.calibrator_.interval(mean, sigma, METRICS_ALPHA)
    from sctk.uq import metrics as m

    scores = {
        "alpha": METRICS_ALPHA,
        "coverage": m.coverage(y, lower, upper),
        "mean_width": m.mean_width(lower, upper),
        "interval_score": m.interval_score(y, lower, upper, METRICS_ALPHA),
        "n_calibration": len(obs),
    }
    source = {
        "observations": len(obs),
        "first_id": obs[0].id,
        "last_id": obs[-1].id,
        "recalibrated": True,
    }
    state = session.get(UqAdaptive, row.id)
    if state is not None and state.enabled:
        state.alpha_t, state.steps = state.alpha, 0  # the new scores answer the drift seen
    row = registry.replace_calibration(
        session, settings.home, row, model, source, scores, cache, actor
    )
    return registry.as_dict(row)
