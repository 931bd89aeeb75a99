"""A calibration report for predictive intervals: the scores as JSON and two plots as PNG.

    out = model.predict_interval(X_test, alpha=0.1)
    scores = evaluate(y_test, out, 0.1)                   # a dict of plain numbers
    paths = write_report("reports/run1", y_test, out, 0.1, "flow demo")

OUT is what `predict_interval` returns: `mean`, `lower`, `upper` and (optional) `sigma`, any
shape (fields are flattened). The calibration curve needs intervals at other levels than
ALPHA; pass INTERVAL_AT (alpha -> (lower, upper)), for instance the model's own conformal
calibrator, or leave it out to use the Gaussian intervals mean +- z * sigma.

Files are deterministic for the same inputs: fixed figure size and dpi, sorted JSON keys,
and one time stamp, `created_at`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm

from sctk.errors import SctkError
from sctk.uq import metrics
from sctk.uq.conformal import check_alpha

IntervalAt = Callable[[float], tuple[np.ndarray, np.ndarray]]

LEVELS = np.linspace(0.05, 0.95, 19)
TAIL = 0.2  # the share of points called 'noisiest' and 'quietest'
FIGSIZE = (6.4, 4.8)  # inches; at DPI this is 640 x 480 pixels
DPI = 100
MAX_PLOTTED = 2000  # more points make an unreadable band; evenly spaced ones are kept


def _flat(name: str, values: Any, size: int | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if size is not None and array.size != size:
        raise SctkError(f"'{name}' has {array.size} values for {size} targets; they must match.")
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise SctkError(f"'{name}' is empty or holds NaN or infinite values.")
    return array


def _unpack(y: Any, out: dict[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    missing = [k for k in ("mean", "lower", "upper") if k not in out]
    if missing:
        raise SctkError(
            f"The predictions lack {', '.join(missing)}; pass what predict_interval returns."
        )
    y = _flat("y", y)
    arrays = {k: _flat(k, out[k], y.size) for k in ("mean", "lower", "upper")}
    if out.get("sigma") is not None:
        arrays["sigma"] = _flat("sigma", out["sigma"], y.size)
    return y, arrays


def gaussian_interval_at(mean: np.ndarray, sigma: np.ndarray) -> IntervalAt:
    """Central intervals of N(mean, sigma^2) at miscoverage alpha."""

    def interval_at(alpha: float) -> tuple[np.ndarray, np.ndarray]:
        z = float(norm.ppf(1.0 - check_alpha(alpha) / 2.0))
        return mean - z * sigma, mean + z * sigma

    return interval_at


def _tails(sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the TAIL share of points with the largest and with the smallest sigma."""
    k = max(1, math.ceil(TAIL * sigma.size))
    order = np.argsort(sigma, kind="stable")
    return order[-k:], order[:k]


def evaluate(
    y: Any, out: dict[str, Any], alpha: float, interval_at: IntervalAt | None = None
) -> dict[str, Any]:
    """The scores of intervals OUT at miscoverage ALPHA against targets Y (plain numbers).

    Scores that need sigma (NLL, CRPS, the tails) are None when OUT has none; so is the
    calibration curve unless INTERVAL_AT is given.
    """
    alpha = check_alpha(alpha)
    y, a = _unpack(y, out)
    mean, lower, upper, sigma = a["mean"], a["lower"], a["upper"], a.get("sigma")
    result: dict[str, Any] = {
        "alpha": alpha,
        "n": int(y.size),
        "coverage": metrics.coverage(y, lower, upper),
        "mean_width": metrics.mean_width(lower, upper),
        "interval_score": metrics.interval_score(y, lower, upper, alpha),
        "gaussian_nll": None,
        "crps": None,
        "calibration": None,
        "coverage_noisiest": None,
        "coverage_quietest": None,
    }
    if sigma is not None:
        result["gaussian_nll"] = metrics.gaussian_nll(y, mean, sigma)
        result["crps"] = metrics.gaussian_crps(y, mean, sigma)
        noisy, quiet = _tails(sigma)
        result["coverage_noisiest"] = metrics.coverage(y[noisy], lower[noisy], upper[noisy])
        result["coverage_quietest"] = metrics.coverage(y[quiet], lower[quiet], upper[quiet])
        if interval_at is None:
            interval_at = gaussian_interval_at(mean, sigma)
    if interval_at is not None:

        def flat_interval_at(level_alpha: float) -> tuple[np.ndarray, np.ndarray]:
            lo, hi = interval_at(level_alpha)
            return (_flat("lower", lo, y.size), _flat("upper", hi, y.size))

        levels, observed = metrics.calibration_curve(y, flat_interval_at, LEVELS)
        result["calibration"] = {
            "levels": [float(v) for v in levels],
            "observed": [float(v) for v in observed],
            "miscalibration_area": metrics.miscalibration_area(levels, observed),
        }
    return result


# --- plots ---------------------------------------------------------------------------------


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    import io

    from sctk.fsutil import atomic_write

    # No 'Software' or date chunks: the same inputs give the same bytes.
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    atomic_write(path, buffer.getvalue())


def plot_calibration(path: Path, scores: dict[str, Any], title: str) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="ideal")
    cal = scores.get("calibration")
    if cal is not None:
        ax.plot(cal["levels"], cal["observed"], marker="o", label="observed")
        ax.set_title(f"{title}: miscalibration area {cal['miscalibration_area']:.3f}")
    else:
        ax.set_title(f"{title}: no calibration curve (no sigma)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("observed coverage")
    ax.legend(loc="upper left")
    ax.grid(True, alpha=0.3)
    _save(fig, path)


def plot_intervals(
    path: Path,
    y: np.ndarray,
    a: dict[str, np.ndarray],
    alpha: float,
    title: str,
    x: np.ndarray | None,
) -> None:
    if x is not None:
        key, xlabel = x, "x"
    else:
        key, xlabel = a["mean"], "points sorted by prediction"
    order = np.argsort(key, kind="stable")
    if order.size > MAX_PLOTTED:
        order = order[np.linspace(0, order.size - 1, MAX_PLOTTED).round().astype(int)]
    pos = key[order] if x is not None else np.arange(order.size)
    fig = _figure()
    ax = fig.add_subplot()
    ax.fill_between(
        pos,
        a["lower"][order],
        a["upper"][order],
        color="tab:blue",
        alpha=0.25,
        linewidth=0,
        label=f"{1 - alpha:.0%} interval",
    )
    ax.plot(pos, a["mean"][order], color="tab:blue", linewidth=1, label="prediction")
    ax.scatter(pos, y[order], s=4, color="black", label="truth")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("y")
    ax.set_title(title)
    ax.legend(loc="best")
    _save(fig, path)


def write_report(
    directory: str | Path,
    y: Any,
    out: dict[str, Any],
    alpha: float,
    title: str,
    x: Any = None,
    interval_at: IntervalAt | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write report.json, calibration.png and intervals.png into DIRECTORY; return the paths.

    X, one value per target (a 1-D input), orders the interval plot; without it the points
    are sorted by prediction. EXTRA (JSON values) is added to report.json.
    """
    scores = evaluate(y, out, alpha, interval_at)
    y_flat, arrays = _unpack(y, out)
    x_flat = None
    if x is not None:
        x_arr = np.asarray(x, dtype=np.float64)
        if x_arr.ndim == 2 and x_arr.shape[1] == 1:
            x_arr = x_arr[:, 0]
        if x_arr.ndim != 1:
            raise SctkError(f"x must be one value per target (a 1-D input); got {x_arr.shape}.")
        x_flat = _flat("x", x_arr, y_flat.size)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": directory / "report.json",
        "calibration": directory / "calibration.png",
        "intervals": directory / "intervals.png",
    }
    document = {
        **(extra or {}),
        "title": title,
        # to the microsecond: two evaluations within one second must still tell the newer
        "created_at": datetime.now(UTC).isoformat(),
        **scores,
    }
    from sctk.fsutil import atomic_write

    atomic_write(paths["json"], json.dumps(document, indent=2, sort_keys=True) + "\n")
    plot_calibration(paths["calibration"], scores, title)
    plot_intervals(paths["intervals"], y_flat, arrays, scores["alpha"], title, x_flat)
    return paths
