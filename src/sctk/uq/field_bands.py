"""Simultaneous (whole-field) conformal bands for field models.

Per-pixel bands (the default, `band="pixel"`) pool every pixel's normalised score
|y - mu| / sigma of the calibration fields: each pixel is covered with probability about
1 - alpha, but a field of thousands of pixels is almost never covered everywhere at once.

A whole-field band (`band="field"`) takes one score per calibration field, the largest
normalised error over its pixels and channels, max_p |y_p - mu_p| / sigma_p. With n such
scores exchangeable with a new field's, the band mu +- q sigma built from their
ceil((n + 1)(1 - alpha))-th smallest covers the ENTIRE new field with probability at least
1 - alpha (split conformal applied to the field as one object). It is wider than the
per-pixel band, and needs at least ceil(1 / alpha) - 1 calibration fields rather than pixels.
"""

from __future__ import annotations

import numpy as np

from sctk.errors import SctkError
from sctk.uq.conformal import MIN_SIGMA

BANDS = ("pixel", "field")


def check_band(band: object) -> str:
    if band not in BANDS:
        raise SctkError(
            f"band must be 'pixel' (each pixel covered) or 'field' (the whole field covered at "
            f"once); got {band!r}."
        )
    return str(band)


def field_scores(y: np.ndarray, mean: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """One score per field [B, ...]: the largest normalised error over the field."""
    err = np.abs(np.asarray(y) - np.asarray(mean)) / np.maximum(np.asarray(sigma), MIN_SIGMA)
    return err.reshape(err.shape[0], -1).max(axis=1)


def coverages(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> dict[str, float]:
    """Per-pixel coverage (share of values inside) and whole-field coverage (share of
    fields inside everywhere) of fields [B, ...]."""
    inside = (np.asarray(y) >= lower) & (np.asarray(y) <= upper)
    per_field = inside.reshape(inside.shape[0], -1)
    return {
        "pixel_coverage": float(per_field.mean()),
        "field_coverage": float(per_field.all(axis=1).mean()),
    }
