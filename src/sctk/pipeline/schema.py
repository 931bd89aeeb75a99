"""Schemas: what a dataset's columns must hold, and validation that names every violation.

A schema is a TOML file with one table per column::

    extra_columns = "keep"          # or "reject"; columns the schema does not name

    [columns.x1]
    dtype = "float"                 # float, int, str, bool or datetime
    min = 0.0                       # optional; float, int and datetime columns only
    max = 10.0
    nullable = false                # default false: an empty cell is a violation
    unique = false                  # default false

Rows in a report are 1-based data rows: row 1 is the first record (in a CSV file, the line
after the header; in JSON lines, the first non-empty line).
"""

from __future__ import annotations

import difflib
import hashlib
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sctk import tomltext
from sctk.errors import SctkError
from sctk.fsutil import read_user_text
from sctk.pipeline.arrays import is_array_column

DTYPES = ("float", "int", "str", "bool", "datetime")
COLUMN_KEYS = ("dtype", "min", "max", "nullable", "unique")
TOP_KEYS = ("columns", "extra_columns")
EXTRA_POLICIES = ("keep", "reject")
_RANGED = ("float", "int", "datetime")
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


class SchemaError(SctkError):
    """A schema file that cannot be used."""

    title = "Invalid schema"


class SchemaViolations(SctkError):
    """Data that does not match its schema; carries the full report."""

    http_status = 422
    title = "Data does not match the schema"

    def __init__(self, message: str, report: Report):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    dtype: str
    min: Any = None
    max: Any = None
    nullable: bool = False
    unique: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dtype": self.dtype}
        for key in ("min", "max"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value.isoformat() if isinstance(value, pd.Timestamp) else value
        out["nullable"] = self.nullable
        out["unique"] = self.unique
        return out


@dataclass(frozen=True)
class Schema:
    columns: dict[str, ColumnSpec]
    extra_columns: str = "keep"
    source: str = "schema"
    sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The schema as JSON, as recorded in a dataset's lineage."""
        return {
            "source": self.source,
            "sha256": self.sha256,
            "extra_columns": self.extra_columns,
            "columns": {name: spec.to_dict() for name, spec in self.columns.items()},
        }


def _hint(given: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(given, known, n=1)
    return f"did you mean '{close[0]}'?" if close else f"use one of {', '.join(known)}."


def _bound(source: str, column: str, key: str, dtype: str, value: Any) -> Any:
    if dtype not in _RANGED:
        raise SchemaError(
            f"{source}: column '{column}' sets {key}, but {key} applies only to float, int and "
            f"datetime columns; remove it."
        )
    if dtype == "datetime":
        if isinstance(value, str | datetime | date) and not isinstance(value, time):
            try:
                stamp = pd.Timestamp(value)
            except ValueError:
                stamp = None
            if stamp is not None and not pd.isna(stamp):
                return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        raise SchemaError(
            f"{source}: column '{column}' has {key} = {value!r}, which is not a date or time; "
            f"write it as a TOML datetime such as 2024-01-31T00:00:00Z."
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SchemaError(
            f"{source}: column '{column}' has {key} = {value!r}, which is not a number; "
            f"write it without quotes."
        )
    return value


def parse_schema(text: str, source: str = "schema") -> Schema:
    """A Schema from TOML TEXT; SOURCE names it in messages (usually the file's name)."""
    try:
        data = tomltext.loads(text, source, SchemaError)
    except tomllib.TOMLDecodeError as exc:
        raise SchemaError(f"{source} is not valid TOML: {exc}; fix that line.") from None
    for key in data:
        if key not in TOP_KEYS:
            raise SchemaError(
                f"{source} has the unknown top-level key '{key}'; {_hint(key, TOP_KEYS)}"
            )
    extra = data.get("extra_columns", "keep")
    if extra not in EXTRA_POLICIES:
        raise SchemaError(
            f'{source}: extra_columns = {extra!r} is not allowed; use "keep" or "reject".'
        )
    tables = data.get("columns")
    if not isinstance(tables, dict) or not tables:
        raise SchemaError(
            f"{source} declares no columns; add a [columns.NAME] table for each column."
        )
    columns: dict[str, ColumnSpec] = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise SchemaError(
                f"{source}: columns.{name} must be a table such as [columns.{name}] with "
                f'dtype = "float".'
            )
        for key in table:
            if key not in COLUMN_KEYS:
                raise SchemaError(
                    f"{source}: column '{name}' has the unknown key '{key}'; "
                    f"{_hint(key, COLUMN_KEYS)}"
                )
        dtype = table.get("dtype")
        if dtype is None:
            raise SchemaError(
                f"{source}: column '{name}' has no dtype; add dtype = one of {', '.join(DTYPES)}."
            )
        if dtype not in DTYPES:
            raise SchemaError(
                f"{source}: column '{name}' has the unknown dtype {dtype!r}; "
                f"{_hint(str(dtype), DTYPES)}"
            )
        for flag in ("nullable", "unique"):
            if flag in table and not isinstance(table[flag], bool):
                raise SchemaError(
                    f"{source}: column '{name}' has {flag} = {table[flag]!r}; use true or false."
                )
        low = _bound(source, name, "min", dtype, table["min"]) if "min" in table else None
        high = _bound(source, name, "max", dtype, table["max"]) if "max" in table else None
        if low is not None and high is not None and low > high:
            raise SchemaError(
                f"{source}: column '{name}' has min {table['min']} greater than max "
                f"{table['max']}; swap them."
            )
        columns[name] = ColumnSpec(
            name,
            dtype,
            low,
            high,
            bool(table.get("nullable", False)),
            bool(table.get("unique", False)),
        )
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Schema(columns, extra, source, digest)


def load_schema(path: Path) -> Schema:
    """Read and check a schema file; any problem is one SchemaError sentence naming it."""
    return parse_schema(read_user_text(path, "schema file", SchemaError), path.name)


def schema_from_dict(data: dict[str, Any]) -> Schema:
    """Rebuild a Schema recorded in a lineage by Schema.to_dict()."""
    columns = {}
    for name, spec in data["columns"].items():
        dtype = spec["dtype"]
        low = spec.get("min")
        high = spec.get("max")
        if dtype == "datetime":
            low = pd.Timestamp(low) if low is not None else None
            high = pd.Timestamp(high) if high is not None else None
        columns[name] = ColumnSpec(
            name, dtype, low, high, spec.get("nullable", False), spec.get("unique", False)
        )
    return Schema(
        columns, data.get("extra_columns", "keep"), data.get("source", ""), data.get("sha256", "")
    )


# --- validation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    row: int | None  # 1-based data row; None for a problem with a whole column
    column: str
    problem: str

    def __str__(self) -> str:
        if self.row is None:
            return f"column '{self.column}' {self.problem}"
        return f"row {self.row}, column '{self.column}': {self.problem}"

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "problem": self.problem}


@dataclass
class Report:
    rows: int
    violations: list[Violation] = field(default_factory=list)  # the first ones, in row order
    total: int = 0
    extra_columns: list[str] = field(default_factory=list)
    extra_policy: str = "keep"
    frame: pd.DataFrame | None = None  # the data in the schema's types, when it is ok

    @property
    def ok(self) -> bool:
        return self.total == 0

    @property
    def not_listed(self) -> int:
        return self.total - len(self.violations)

    def notes(self) -> list[str]:
        if self.extra_columns and self.extra_policy == "keep":
            names = ", ".join(f"'{c}'" for c in self.extra_columns)
            return [f"columns not in the schema were kept with the types read: {names}"]
        return []

    def summary(self, what: str) -> str:
        """One sentence: WHAT does not match, each listed violation, and how many more."""
        listed = "; ".join(str(v) for v in self.violations)
        more = f"; and {self.not_listed} more" if self.not_listed else ""
        count = f"{self.total} problem{'s' if self.total != 1 else ''}"
        return f"{what} does not match the schema ({count}): {listed}{more}; nothing was stored."

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "total": self.total,
            "violations": [v.to_dict() for v in self.violations],
            "not_listed": self.not_listed,
            "extra_columns": self.extra_columns,
            "extra_policy": self.extra_policy,
            "notes": self.notes(),
        }


def _shown(value: Any) -> str:
    """A value as a message shows it: text quoted (as the file holds it), numbers and times
    plainly."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, pd.Timestamp | datetime):
        text = value.isoformat()
    elif isinstance(value, float):
        text = format(value, "g")
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_text(s: pd.Series) -> bool:
    return pd.api.types.is_string_dtype(s) or s.dtype == object


def _coerce(s: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, np.ndarray, str]:
    """S in SPEC's type, a mask of values that are not of that type, and why they are not."""
    present = s.notna().to_numpy()
    if spec.dtype == "float":
        if pd.api.types.is_bool_dtype(s):
            return s.astype("float64"), present, "is true/false, not a number"
        num = pd.to_numeric(s, errors="coerce") if _is_text(s) else s
        bad = present & num.isna().to_numpy()
        return num.astype("float64"), bad, "is not a number"
    if spec.dtype == "int":
        if pd.api.types.is_bool_dtype(s):
            return s.astype("Int64"), present, "is true/false, not a whole number"
        num = pd.to_numeric(s, errors="coerce") if _is_text(s) else s
        values = num.astype("float64")
        with np.errstate(invalid="ignore"):
            whole = ((values == np.floor(values)) & (values.abs() < 2.0**63)).to_numpy()
        bad = present & ~(values.notna().to_numpy() & whole)
        out = values.where(~pd.Series(bad, index=s.index)).round().astype("Int64")
        if not spec.nullable and not out.isna().any():
            out = out.astype("int64")
        return out, bad, "is not a whole number"
    if spec.dtype == "str":
        # anything can be written as text; numbers from a typed file become their repr
        return s.astype("str"), np.zeros(len(s), bool), ""
    if spec.dtype == "bool":
        if pd.api.types.is_bool_dtype(s):
            out = s.astype("boolean")
            bad = np.zeros(len(s), bool)
        elif pd.api.types.is_numeric_dtype(s):
            bad = present & ~s.isin([0, 1]).to_numpy()
            out = s.where(~pd.Series(bad, index=s.index)).astype("boolean")
        else:
            text = s.map(lambda v: str(v).strip().lower() if not pd.isna(v) else v)
            mapped = text.map(lambda v: True if v in _TRUE else False if v in _FALSE else None)
            bad = present & mapped.isna().to_numpy()
            out = mapped.astype("boolean")
        if not spec.nullable and not out.isna().any():
            out = out.astype("bool")
        return out, bad, "is not true or false"
    # datetime
    if pd.api.types.is_datetime64_any_dtype(s):
        out = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
        return out, np.zeros(len(s), bool), ""
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return (
            pd.Series(pd.NaT, index=s.index, dtype="datetime64[us, UTC]"),
            present,
            ("is a number, not a date or time"),
        )
    out = pd.to_datetime(s, errors="coerce", utc=True, format="ISO8601")
    bad = present & out.isna().to_numpy()
    return out, bad, "is not a date or time (use ISO 8601, e.g. 2024-01-31T12:00:00Z)"


def validate(df: pd.DataFrame, schema: Schema, max_listed: int = 20) -> Report:
    """Check DF against SCHEMA; the report lists the first MAX_LISTED violations in row order
    and counts the rest. When it is ok, `report.frame` holds the data in the schema's types."""
    df = df.reset_index(drop=True)
    order = {name: i for i, name in enumerate(df.columns)}  # same row: file's column order
    extra = [c for c in df.columns if c not in schema.columns]
    report = Report(
        rows=len(df), extra_columns=[str(c) for c in extra], extra_policy=schema.extra_columns
    )
    # violations are gathered as arrays (row, column order, message) and only the listed
    # ones become objects: a million bad rows must not make a million messages
    whole: list[Violation] = []
    rows_parts: list[np.ndarray] = []
    cols_parts: list[np.ndarray] = []
    makers: list[tuple[np.ndarray, Any]] = []
    out = df.copy()

    def add(column: str, mask: np.ndarray, describe) -> None:
        positions = np.flatnonzero(mask)
        if positions.size:
            rows_parts.append(positions)
            cols_parts.append(np.full(positions.size, order[column]))
            makers.append((positions, (column, describe)))

    for name, spec in schema.columns.items():
        if name not in df.columns:
            whole.append(Violation(None, name, f"is missing (the schema requires a {spec.dtype})"))
            continue
        raw = df[name]
        if is_array_column(raw):
            whole.append(
                Violation(
                    None,
                    name,
                    f"holds an array per row, which a schema cannot check as {spec.dtype}; "
                    'leave it out of the schema (extra_columns = "keep" keeps it)',
                )
            )
            continue
        values, bad, why = _coerce(raw, spec)
        add(name, bad, lambda pos, raw=raw, why=why: f"{_shown(raw.iloc[pos])} {why}")
        nulls = raw.isna().to_numpy()
        if not spec.nullable:
            add(name, nulls, lambda pos: "is empty, and the column is not nullable")
        valid = ~bad & ~nulls
        if spec.min is not None or spec.max is not None:
            with np.errstate(invalid="ignore"):
                if spec.min is not None:
                    low = valid & (values < spec.min).fillna(False).to_numpy(dtype=bool)
                    add(
                        name,
                        low,
                        lambda pos, v=values, m=spec.min: (
                            f"{_shown(v.iloc[pos])} is below the minimum {_shown(m)}"
                        ),
                    )
                if spec.max is not None:
                    high = valid & (values > spec.max).fillna(False).to_numpy(dtype=bool)
                    add(
                        name,
                        high,
                        lambda pos, v=values, m=spec.max: (
                            f"{_shown(v.iloc[pos])} is above the maximum {_shown(m)}"
                        ),
                    )
        if spec.unique:
            kept = values[valid]
            dup_mask = np.zeros(len(df), bool)
            dups = kept.duplicated(keep="first")
            dup_mask[dups.index[dups.to_numpy()]] = True
            if dup_mask.any():
                firsts = kept[~dups]
                first_row = dict(zip(firsts.tolist(), (firsts.index + 1).tolist(), strict=True))
                add(
                    name,
                    dup_mask,
                    lambda pos, v=values, f=first_row: (
                        f"{_shown(v.iloc[pos])} repeats row {f[v.iloc[pos]]}, and the column is "
                        "unique"
                    ),
                )
        out[name] = values
    if schema.extra_columns == "reject":
        for name in extra:
            whole.append(Violation(None, str(name), "is not in the schema, which rejects others"))

    total_rows = sum(p.size for p in rows_parts)
    report.total = len(whole) + total_rows
    listed = whole[:max_listed]
    room = max_listed - len(listed)
    if room > 0 and total_rows:
        rows = np.concatenate(rows_parts)
        cols = np.concatenate(cols_parts)
        which = np.concatenate([np.full(p.size, i) for i, (p, _) in enumerate(makers)])
        within = np.concatenate([np.arange(p.size) for p, _ in makers])
        pick = np.lexsort((which, cols, rows))[:room]
        for k in pick:
            positions, (column, describe) = makers[which[k]]
            pos = int(positions[within[k]])
            listed.append(Violation(pos + 1, column, describe(pos)))
    report.violations = listed
    if report.ok:
        report.frame = out  # the file's column order: nothing is reordered implicitly
    return report
