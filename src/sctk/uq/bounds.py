"""The bounds of the models' size-like settings, declared once.

What a request may ask a worker to build and run: network sizes (memory), epochs and batch
sizes (time), threads, seeds. `check` enforces the table wherever a config arrives (POST
/api/v1/models, `sctk uq train`, a uq.train job submitted by any path); the Python API is the
user's own process and may go beyond it. The highs leave the defaults and every documented
use far inside: a tabular net of the largest shape is about 8 million weights (32 MB), a field
net about 10 million.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sctk.errors import SctkError


@dataclass(frozen=True)
class Bound:
    low: int
    high: int
    what: str


BOUNDS: dict[str, Bound] = {
    "epochs": Bound(1, 10_000, "passes over the training data"),
    "batch_size": Bound(1, 65_536, "rows or fields per optimiser step"),
    "patience": Bound(1, 10_000, "epochs without improvement before early stopping"),
    "threads": Bound(1, 64, "torch threads of one fit"),
    "seed": Bound(0, 2**32 - 1, "random seed"),
    "hidden": Bound(1, 1_024, "units of each hidden layer"),
    "hidden_layers": Bound(0, 8, "hidden layers of a tabular model"),
    "width": Bound(1, 256, "channels of each convolution of a field model"),
    "depth": Bound(1, 16, "convolution layers of a field model"),
    "cv_folds": Bound(2, 20, "folds of CV+ calibration"),
    "cv_below": Bound(0, 10_000_000, "rows below which CV+ replaces a calibration split"),
    "mlp_rows": Bound(0, 10_000_000, "training rows up to which auto also tries the network"),
    "select_folds": Bound(1, 10, "folds of the training rows auto chooses over"),
}
# the boosted learners' settings a request may give (scikit-learn HistGradientBoosting's)
BOOST_BOUNDS: dict[str, Bound] = {
    "max_iter": Bound(1, 5_000, "boosting iterations"),
    "max_leaf_nodes": Bound(2, 4_096, "leaves of each tree"),
    "min_samples_leaf": Bound(1, 1_000_000, "rows in each leaf"),
    "max_depth": Bound(1, 64, "depth of each tree"),
    "max_bins": Bound(2, 255, "bins of each feature"),
}
BOOST_RATES = ("learning_rate", "l2_regularization")


def _whole(key: str, value: Any, field: str | None = None) -> None:
    bound = BOUNDS[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (bound.low <= value <= bound.high)
    ):
        raise SctkError(
            f"{field or repr(key)} must be a whole number from {bound.low} to {bound.high} "
            f"({bound.what}); got {value!r:.60}."
        )


def check(config: dict[str, Any]) -> None:
    """One sentence naming the setting, its value and its bound when CONFIG (a tabular or
    field model's parameters) asks for more than BOUNDS allow."""
    for key in BOUNDS:
        if key in config and config[key] is not None and key not in ("hidden", "hidden_layers"):
            _whole(key, config[key])
    if config.get("hidden") is not None:
        hidden = config["hidden"]
        if not isinstance(hidden, list | tuple):
            raise SctkError(
                f"'hidden' must be a list of layer sizes such as [64, 64]; got {hidden!r:.60}."
            )
        bound = BOUNDS["hidden_layers"]
        if not bound.low <= len(hidden) <= bound.high:
            raise SctkError(
                f"'hidden' has {len(hidden)} layers; give {bound.low} to {bound.high} layer sizes."
            )
        for size in hidden:
            _whole("hidden", size, "Each size in 'hidden'")
    if config.get("boost") is not None:
        _check_boost(config["boost"])


def _check_boost(boost: Any) -> None:
    known = sorted([*BOOST_BOUNDS, *BOOST_RATES])
    if not isinstance(boost, dict) or set(boost) - set(known):
        raise SctkError(
            f"'boost' must be a table of some of {', '.join(known)}; got {boost!r:.80}."
        )
    for key, value in boost.items():
        if key in BOOST_BOUNDS:
            bound = BOOST_BOUNDS[key]
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not (bound.low <= value <= bound.high)
            ):
                raise SctkError(
                    f"boost.{key} must be a whole number from {bound.low} to {bound.high} "
                    f"({bound.what}); got {value!r:.60}."
                )
        elif (
            isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value <= 10)
        ):
            raise SctkError(f"boost.{key} must be a number from 0 to 10; got {value!r:.60}.")
