"""Pipeline files and the transforms they list, run batch by batch over pandas DataFrames.

A pipeline is a TOML file::

    description = "clean and split the run-7 measurements"   # optional
    output = "run7"                 # optional base name of the outputs
    format = "parquet"              # optional: parquet (default) or npz

    [[steps]]
    op = "select"
    columns = ["x1", "x2", "y"]

    [[steps]]
    op = "rename"
    columns = { x1 = "a" }          # old name = new name

    [[steps]]
    op = "filter"
    expr = "a > 0 and y < 10"       # keeps the rows where it is true

    [[steps]]
    op = "derive"
    column = "r"
    expr = "sqrt(a**2 + x2**2)"

    [[steps]]
    op = "normalise"
    columns = ["a", "x2"]
    method = "zscore"               # or "minmax"; fitted parameters go into the lineage

    [[steps]]
    op = "split"                    # last step only: three outputs, NAME-train, ...
    train = 0.6
    calibration = 0.2
    test = 0.2
    seed = 42

Steps run over a dataset a batch of rows at a time (`run_batches`), so memory holds one
batch whatever the dataset's size, and the result does not depend on where batches end:
select, rename, filter and derive work row by row; normalise is fitted in a pass of its own
over every row before the pass that applies it, with exact sums (sctk.pipeline.moments);
split sends each row to a part by a seeded hash of the row's values, not by its position.

Expressions of derive and filter steps are checked and evaluated by the sandbox in
sctk.pipeline.expressions. A column whose name is not a Python identifier cannot be named
in an expression: rename it first.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sctk import tomltext
from sctk.fsutil import read_user_text
from sctk.pipeline.arrays import is_array_column
from sctk.pipeline.expressions import PipelineError, check_expression, evaluate
from sctk.pipeline.moments import Moments

OPS = ("select", "rename", "filter", "derive", "normalise", "split")
STEP_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # op -> (required, optional)
    "select": (("columns",), ()),
    "rename": (("columns",), ()),
    "filter": (("expr",), ()),
    "derive": (("column", "expr"), ()),
    "normalise": (("columns",), ("method",)),
    "split": (("train", "calibration", "test"), ("seed",)),
}
TOP_KEYS = ("description", "output", "format", "steps")
SPLIT_PARTS = ("train", "calibration", "test")
NORMALISE_METHODS = ("zscore", "minmax")
FORMATS = ("parquet", "npz")


@dataclass(frozen=True)
class Step:
    index: int  # 1-based, as the file lists them
    op: str
    params: dict[str, Any]

    @property
    def label(self) -> str:
        return f"step {self.index} ({self.op})"


@dataclass(frozen=True)
class Pipeline:
    steps: list[Step]
    description: str = ""
    output: str | None = None
    format: str | None = None
    source: str = "pipeline"  # the file's path as given
    text: str = ""
    sha256: str = ""

    @property
    def splits(self) -> bool:
        return bool(self.steps) and self.steps[-1].op == "split"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.source,
            "sha256": self.sha256,
            "description": self.description,
            "steps": [{"op": s.op, **s.params} for s in self.steps],
        }


# --- pipeline files ---------------------------------------------------------------------------


def _fail(step: Step, message: str) -> PipelineError:
    return PipelineError(f"{step.label}: {message}")


def _names(step: Step, value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _fail(step, f'{key} must be a non-empty list of column names such as ["x"].')
    if len(set(value)) != len(value):
        dup = next(v for i, v in enumerate(value) if v in value[:i])
        raise _fail(step, f"the column '{dup}' is listed twice.")
    return list(value)


def _check_step(step: Step) -> None:
    p = step.params
    if step.op == "select":
        _names(step, p["columns"], "columns")
    elif step.op == "rename":
        mapping = p["columns"]
        if (
            not isinstance(mapping, dict)
            or not mapping
            or not all(isinstance(v, str) and v for v in mapping.values())
        ):
            raise _fail(step, 'columns must be a table of old = "new" names.')
        if len(set(mapping.values())) != len(mapping):
            raise _fail(step, "two columns are renamed to the same name.")
    elif step.op in ("filter", "derive"):
        try:
            check_expression(p["expr"])
        except PipelineError as exc:
            raise _fail(step, exc.message) from None
        if step.op == "derive" and (not isinstance(p["column"], str) or not p["column"]):
            raise _fail(step, "column must be the name of the new column.")
    elif step.op == "normalise":
        _names(step, p["columns"], "columns")
        method = p.get("method", "zscore")
        if method not in NORMALISE_METHODS:
            raise _fail(step, f'method {method!r} is unknown; use "zscore" or "minmax".')
    elif step.op == "split":
        fractions = [p[k] for k in SPLIT_PARTS]
        if not all(isinstance(f, int | float) and not isinstance(f, bool) for f in fractions):
            raise _fail(step, "train, calibration and test must be numbers.")
        if any(f < 0 or f > 1 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
            raise _fail(
                step, "train, calibration and test must be fractions in [0, 1] that add up to 1."
            )
        seed = p.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise _fail(step, "seed must be a whole number of 0 or more.")


def parse_pipeline(text: str, source: str = "pipeline") -> Pipeline:
    """A Pipeline from TOML TEXT; SOURCE (the file's path) names it in messages and lineage."""
    label = Path(source).name or source
    try:
        data = tomltext.loads(text, label, PipelineError)
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError(f"{label} is not valid TOML: {exc}; fix that line.") from None
    for key in data:
        if key not in TOP_KEYS:
            raise PipelineError(
                f"{label} has the unknown top-level key '{key}'; known keys: {', '.join(TOP_KEYS)}."
            )
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise PipelineError(
            f"{label} lists no steps; add [[steps]] tables with op = one of {', '.join(OPS)}."
        )
    fmt = data.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise PipelineError(f'{label}: format {fmt!r} is unknown; use "parquet" or "npz".')
    output = data.get("output")
    if output is not None and not isinstance(output, str):
        raise PipelineError(f"{label}: output must be a dataset name in quotes.")
    steps = []
    for i, raw in enumerate(raw_steps, start=1):
        if not isinstance(raw, dict):
            raise PipelineError(f"{label}: step {i} must be a [[steps]] table.")
        op = raw.get("op")
        if op not in OPS:
            raise PipelineError(f"{label}: step {i} has op = {op!r}; use one of {', '.join(OPS)}.")
        required, optional = STEP_KEYS[op]
        params = {k: v for k, v in raw.items() if k != "op"}
        for key in params:
            if key not in required + optional:
                raise PipelineError(
                    f"{label}: step {i} ({op}) has the unknown key '{key}'; it takes "
                    f"{', '.join(required + optional)}."
                )
        for key in required:
            if key not in params:
                raise PipelineError(f"{label}: step {i} ({op}) needs '{key}'.")
        step = Step(i, op, params)
        try:
            _check_step(step)
        except PipelineError as exc:
            raise PipelineError(f"{label}: {exc.message}") from None
        if op == "split" and i != len(raw_steps):
            raise PipelineError(
                f"{label}: step {i} (split) must be the last step; it ends the pipeline with "
                "three outputs."
            )
        steps.append(step)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Pipeline(steps, str(data.get("description", "")), output, fmt, source, text, digest)


def load_pipeline(path: Path) -> Pipeline:
    """Read and check a pipeline file."""
    text = read_user_text(path, "pipeline file", PipelineError)
    return parse_pipeline(text, str(path.absolute()))


# --- running ----------------------------------------------------------------------------------

Progress = Callable[[float, str], None]
# a stable split: the part of a row depends on its values and the seed, nothing else
_SPLIT_KEY = "sctk-split-{seed}"


def _known(step: Step, df: pd.DataFrame, names: list[str]) -> None:
    missing = [n for n in names if n not in df.columns]
    if missing:
        have = ", ".join(str(c) for c in df.columns)
        raise _fail(
            step,
            f"no column {', '.join(repr(m) for m in missing)} at this point; the columns are: "
            f"{have}.",
        )


def _scalable(step: Step, df: pd.DataFrame) -> list[str]:
    columns = step.params["columns"]
    _known(step, df, columns)
    for name in columns:
        col = df[name]
        if is_array_column(col):
            raise _fail(step, f"column '{name}' holds an array per row; it cannot be scaled.")
        if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            raise _fail(step, f"column '{name}' is {col.dtype}, not numeric; it cannot be scaled.")
    return columns


def _floats(col: pd.Series) -> np.ndarray:
    return col.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)


class _Fit:
    """A normalise step's statistics, gathered over every batch of its input."""

    def __init__(self, step: Step):
        self.step = step
        self.method = step.params.get("method", "zscore")
        self.moments = {name: Moments() for name in step.params["columns"]}

    def add(self, df: pd.DataFrame) -> None:
        for name in _scalable(self.step, df):
            self.moments[name].add(_floats(df[name]), squares=self.method == "zscore")

    def result(self) -> dict[str, Any]:
        fitted: dict[str, Any] = {}
        for name, m in self.moments.items():
            if self.method == "zscore":
                mean, std = m.mean(), m.std()
                if not np.isfinite(std) or std == 0:
                    raise _fail(self.step, f"column '{name}' is constant (or empty): no z-scores.")
                fitted[name] = {"mean": mean, "std": std}
            else:
                low, high = m.low, m.high
                if not np.isfinite(high - low) or high == low:
                    raise _fail(
                        self.step, f"column '{name}' is constant (or empty): it cannot be scaled."
                    )
                fitted[name] = {"min": low, "max": high}
        return {"method": self.method, "fitted": fitted}


def _scale(step: Step, df: pd.DataFrame, fit: dict[str, Any]) -> pd.DataFrame:
    df = df.copy()
    for name in _scalable(step, df):
        values = _floats(df[name])
        p = fit["fitted"][name]
        if fit["method"] == "zscore":
            df[name] = (values - p["mean"]) / p["std"]
        else:
            df[name] = (values - p["min"]) / (p["max"] - p["min"])
    return df


def _hashable(df: pd.DataFrame) -> pd.DataFrame:
    """DF with each array column as the bytes of its arrays (arrays cannot be hashed)."""
    arrays = [c for c in df.columns if is_array_column(df[c])]
    if not arrays:
        return df
    df = df.copy()
    for name in arrays:
        df[name] = [
            None if v is None else np.asarray(v, dtype=np.float64).tobytes() for v in df[name]
        ]
    return df


def split_positions(df: pd.DataFrame, fractions: list[float], seed: int) -> np.ndarray:
    """The part (0, 1, 2) of each row of DF: a seeded hash of the row's values mapped to
    [0, 1) and cut at the cumulative FRACTIONS. Equal rows go to the same part."""
    if not len(df):
        return np.zeros(0, dtype=np.int8)
    digest = hashlib.sha256(_SPLIT_KEY.format(seed=seed).encode()).digest()
    hashed = pd.util.hash_pandas_object(_hashable(df), index=False, hash_key=digest[:16].hex()[:16])
    # pandas keys only the hashing of text; the seed is mixed into every row's hash here
    # (splitmix64's finaliser), so that each seed gives another split of the same rows
    h = hashed.to_numpy(dtype=np.uint64) ^ np.uint64(int.from_bytes(digest[16:24], "little"))
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    h = h ^ (h >> np.uint64(31))
    unit = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53
    cuts = np.cumsum(fractions)[:-1]
    return np.searchsorted(cuts, unit, side="right").astype(np.int8)


def _row_step(step: Step, df: pd.DataFrame, max_bytes: int | None) -> tuple[pd.DataFrame, int]:
    """A select, rename, filter or derive step on one batch; the rows it dropped."""
    p = step.params
    if step.op == "select":
        _known(step, df, p["columns"])
        return df[p["columns"]].copy(), 0
    if step.op == "rename":
        _known(step, df, list(p["columns"]))
        clash = [
            new
            for old, new in p["columns"].items()
            if new in df.columns and new not in p["columns"] and new != old
        ]
        if clash:
            raise _fail(step, f"the column '{clash[0]}' already exists; rename or drop it first.")
        return df.rename(columns=p["columns"]), 0
    if step.op == "filter":
        try:
            mask = evaluate(df, p["expr"], max_bytes)
        except PipelineError as exc:
            raise _fail(step, exc.message) from None
        if not pd.api.types.is_bool_dtype(mask):
            raise _fail(
                step,
                f"the expression {p['expr'][:80]!r} gives {mask.dtype} values, not true/false; "
                "a filter needs a comparison such as x > 0.",
            )
        keep = mask.fillna(False).to_numpy(dtype=bool)
        return df[keep].reset_index(drop=True), int(len(df) - keep.sum())
    try:
        values = evaluate(df, p["expr"], max_bytes)
    except PipelineError as exc:
        raise _fail(step, exc.message) from None
    out = df.copy()
    out[p["column"]] = values.set_axis(df.index)
    return out, 0


class _Pass:
    """One pass over the batches through the steps before STOP, with what it counted."""

    def __init__(self, steps: list[Step], fits: dict[int, dict[str, Any]], max_bytes: int | None):
        self.steps = steps
        self.fits = fits
        self.max_bytes = max_bytes
        self.rows_in = [0] * len(steps)
        self.dropped = [0] * len(steps)

    def through(self, df: pd.DataFrame, stop: int) -> pd.DataFrame:
        for i, step in enumerate(self.steps[:stop]):
            self.rows_in[i] += len(df)
            if step.op == "normalise":
                df = _scale(step, df, self.fits[i])
            elif step.op != "split":
                df, dropped = _row_step(step, df, self.max_bytes)
                self.dropped[i] += dropped
        return df


def run_batches(
    pipeline: Pipeline,
    batches: Callable[[], Iterable[pd.DataFrame]],
    emit: Callable[[str, pd.DataFrame], None],
    *,
    rows: int | None = None,
    progress: Progress | None = None,
    max_bytes: int | None = None,
) -> list[dict[str, Any]]:
    """Run every step of PIPELINE over the frames BATCHES() yields (called once per pass: a
    first pass to fit each normalise step, then the pass that writes), handing each batch of
    output to EMIT(part, frame) -- part "" or, after a split, train, calibration or test --
    in the order of the rows. Returns the record of each step (its parameters, and what it
    fitted or counted). ROWS, the input's rows if known, lets PROGRESS say how far it is.
    MAX_BYTES bounds the values an expression builds on one batch (see `evaluate`)."""
    report = progress or (lambda _f, _m: None)
    steps = pipeline.steps
    fitting = [i for i, s in enumerate(steps) if s.op == "normalise"]
    passes = len(fitting) + 1
    fits: dict[int, dict[str, Any]] = {}

    def tick(number: int, done: int, what: str) -> None:
        share = done / rows if rows else 0.0
        report((number + min(share, 1.0)) / passes, f"{what}: {done:,} rows")

    for number, index in enumerate(fitting):
        fit = _Fit(steps[index])
        walk = _Pass(steps, fits, max_bytes)
        done = 0
        tick(number, done, f"fitting {steps[index].label}")
        for frame in batches():
            fit.add(walk.through(frame.reset_index(drop=True), index))
            done += len(frame)
            tick(number, done, f"fitting {steps[index].label}")
        fits[index] = fit.result()

    walk = _Pass(steps, fits, max_bytes)
    split = steps[-1] if pipeline.splits else None
    counted = dict.fromkeys(SPLIT_PARTS, 0)
    done = 0
    tick(passes - 1, done, "transforming")
    for frame in batches():
        out = walk.through(frame.reset_index(drop=True), len(steps))
        done += len(frame)
        if split is None:
            emit("", out)
        else:
            seed = int(split.params.get("seed", 0))
            where = split_positions(out, [float(split.params[k]) for k in SPLIT_PARTS], seed)
            for code, part in enumerate(SPLIT_PARTS):
                chosen = out[where == code].reset_index(drop=True)
                counted[part] += len(chosen)
                emit(part, chosen)
        tick(passes - 1, done, "transforming")

    records = []
    for i, step in enumerate(steps):
        record: dict[str, Any] = {"op": step.op, **step.params}
        if step.op == "filter":
            record["rows_in"] = walk.rows_in[i]
            record["rows_out"] = walk.rows_in[i] - walk.dropped[i]
        elif step.op == "normalise":
            record.update(fits[i])
        elif step.op == "split":
            record.update({"seed": int(step.params.get("seed", 0)), "rows": counted})
        records.append(record)
    return records


def run(
    pipeline: Pipeline,
    df: pd.DataFrame,
    progress: Progress | None = None,
    max_bytes: int | None = None,
    batch_rows: int | None = None,
) -> tuple[dict[str, pd.DataFrame], list[dict[str, Any]]]:
    """Run every step over DF in memory, in batches of BATCH_ROWS rows (default: one): the
    outputs ({"": df} or the three split parts) and the record of each step."""
    df = df.reset_index(drop=True)
    size = batch_rows or max(len(df), 1)

    def batches() -> Iterable[pd.DataFrame]:
        if not len(df):
            yield df
        for start in range(0, len(df), size):
            yield df.iloc[start : start + size]

    pieces: dict[str, list[pd.DataFrame]] = {}

    def emit(part: str, frame: pd.DataFrame) -> None:
        pieces.setdefault(part, []).append(frame)

    records = run_batches(
        pipeline, batches, emit, rows=len(df), progress=progress, max_bytes=max_bytes
    )
    # an empty batch's derived columns have no type of their own: left out unless all are
    outputs = {
        k: pd.concat([f for f in v if len(f)] or v[:1], ignore_index=True)
        for k, v in pieces.items()
    }
    return outputs, records
