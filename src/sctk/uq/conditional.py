"""Coverage where it can hide a failure: per group and per decile of the predicted width.

A marginal coverage of 0.9 can be 0.99 on easy rows and 0.7 on hard ones. Rows binned by the
width of their interval (the model's own idea of difficulty) and by a grouping column show
whether the nominal level holds in each part.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sctk.uq.scores import group_keys

MAX_GROUPS = 50  # a report lists at most this many groups (the largest)


def _row(y, lower, upper) -> dict[str, Any]:
    inside = (y >= lower) & (y <= upper)
    return {
        "n": int(y.size),
        "coverage": float(inside.mean()) if y.size else None,
        "mean_width": float(np.mean(upper - lower)) if y.size else None,
    }


def by_width_decile(y, lower, upper) -> list[dict[str, Any]]:
    """Coverage in each tenth of the rows sorted by interval width, narrowest first."""
    y, lower, upper = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (y, lower, upper))
    order = np.argsort(upper - lower, kind="stable")
    out = []
    for d, rows in enumerate(np.array_split(order, 10), start=1):
        if rows.size:
            out.append({"decile": d, **_row(y[rows], lower[rows], upper[rows])})
    return out


def by_group(y, lower, upper, groups) -> list[dict[str, Any]]:
    """Coverage in each group (the MAX_GROUPS largest), largest group first."""
    y, lower, upper = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (y, lower, upper))
    keys = group_keys(groups)
    values, counts = np.unique(keys, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:MAX_GROUPS]
    return [
        {
            "group": str(values[i]),
            **_row(y[keys == values[i]], lower[keys == values[i]], upper[keys == values[i]]),
        }
        for i in order
    ]
