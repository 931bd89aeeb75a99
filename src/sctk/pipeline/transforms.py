"""Pipeline files and the transforms they list, over pandas DataFrames.

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

Expressions are checked with Python's `ast` against a small grammar -- column names,
numbers, text and true/false constants, arithmetic, comparisons, and/or/not (also & | ~),
and the functions in FUNCTIONS -- and the checked tree is evaluated here, node by node, on
the columns. No string is ever handed to eval(), exec() or pandas' own expression parser.
A column whose name is not a Python identifier cannot be named in an expression: rename it
first.
"""

from __future__ import annotations

import ast
import hashlib
import operator
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sctk import tomltext
from sctk.errors import SctkError
from sctk.fsutil import read_user_text
from sctk.pipeline.arrays import is_array_column
from sctk.pipeline.limits import OBJECT_OVERHEAD, DataLimits

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

# name -> (function, number of arguments)
FUNCTIONS: dict[str, tuple[Callable[..., Any], int]] = {
    "sqrt": (np.sqrt, 1),
    "log": (np.log, 1),
    "log10": (np.log10, 1),
    "log2": (np.log2, 1),
    "log1p": (np.log1p, 1),
    "exp": (np.exp, 1),
    "expm1": (np.expm1, 1),
    "abs": (np.abs, 1),
    "sin": (np.sin, 1),
    "cos": (np.cos, 1),
    "tan": (np.tan, 1),
    "arcsin": (np.arcsin, 1),
    "arccos": (np.arccos, 1),
    "arctan": (np.arctan, 1),
    "arctan2": (np.arctan2, 2),
    "sinh": (np.sinh, 1),
    "cosh": (np.cosh, 1),
    "tanh": (np.tanh, 1),
    "floor": (np.floor, 1),
    "ceil": (np.ceil, 1),
    "minimum": (np.minimum, 2),
    "maximum": (np.maximum, 2),
    "where": (np.where, 3),
    "isnull": (pd.isna, 1),
    "notnull": (pd.notna, 1),
}
CONSTANTS = {"pi": np.pi, "inf": np.inf, "nan": np.nan}
MAX_EXPRESSION = 2000
MAX_NODES = 400

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_ALLOWED_HINT = (
    "expressions may use column names, numbers, quoted text, true/false, + - * / // % **, "
    "comparisons, and/or/not, and the functions " + ", ".join(FUNCTIONS)
)


class PipelineError(SctkError):
    """A pipeline file, or a step of it, that cannot be run."""

    title = "Invalid pipeline"


class UnsafeExpression(PipelineError):
    """An expression outside the allowed grammar."""


class CostlyExpression(PipelineError):
    """An expression whose value would be larger than the limit; refused before it is built."""

    http_status = 413
    title = "Expression too costly"


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


# --- expressions ----------------------------------------------------------------------------


def _unsafe(expr: str, reason: str) -> UnsafeExpression:
    shown = expr if len(expr) <= 80 else expr[:77] + "..."
    return UnsafeExpression(f"The expression {shown!r} is not allowed: {reason}; {_ALLOWED_HINT}.")


def _describe(node: ast.AST) -> str:
    """Why NODE is refused, as a clause."""
    if isinstance(node, ast.Attribute):
        return f"attribute access ('.{node.attr}') is not allowed"
    if isinstance(node, ast.Subscript):
        return "indexing with [...] is not allowed"
    if isinstance(node, ast.Lambda):
        return "lambda is not allowed"
    if isinstance(node, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
        return "comprehensions are not allowed"
    if isinstance(node, ast.List | ast.Tuple | ast.Set | ast.Dict):
        return "lists, tuples and dicts are not allowed"
    if isinstance(node, ast.NamedExpr):
        return "assignment (:=) is not allowed"
    if isinstance(node, ast.IfExp):
        return "'x if c else y' is not allowed (use where(c, x, y))"
    if isinstance(node, ast.JoinedStr):
        return "f-strings are not allowed"
    if isinstance(node, ast.Compare):
        return "'in' and 'is' comparisons are not allowed"
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        return f"the operator {type(node.op).__name__} is not allowed"
    return f"{type(node).__name__} is not allowed"


def check_expression(expr: Any) -> ast.Expression:
    """Parse EXPR and check it against the allowed grammar; one sentence for anything else."""
    if not isinstance(expr, str) or not expr.strip():
        raise PipelineError(f"An expression must be non-empty text, not {expr!r}.")
    if len(expr) > MAX_EXPRESSION:
        raise _unsafe(expr, f"it is longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise PipelineError(
            f"The expression {expr[:80]!r} is not valid: {exc.msg} at column {exc.offset}."
        ) from None
    except (RecursionError, MemoryError, ValueError):
        raise _unsafe(expr, "it is nested too deeply") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise _unsafe(expr, f"it has more than {MAX_NODES} parts")
    for node in nodes:
        if isinstance(node, ast.Expression | ast.Load):
            continue
        if isinstance(node, ast.operator | ast.unaryop | ast.cmpop | ast.boolop):
            continue  # checked with the node that carries them
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool | int | float | str):
                continue
            raise _unsafe(expr, f"the constant {node.value!r} is not a number, text or true/false")
        if isinstance(node, ast.Name):
            if node.id.startswith("__"):
                raise _unsafe(expr, f"'{node.id}' is not a column or an allowed function")
            continue  # a column, a function or a constant; resolved at evaluation
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            continue
        if isinstance(node, ast.UnaryOp) and isinstance(
            node.op, ast.USub | ast.UAdd | ast.Not | ast.Invert
        ):
            continue
        if isinstance(node, ast.BoolOp):
            continue
        if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
            continue
        if isinstance(node, ast.Call):
            func = node.func
            if not isinstance(func, ast.Name):
                target = f"'.{func.attr}'" if isinstance(func, ast.Attribute) else "that"
                raise _unsafe(expr, f"calling {target} is not allowed, only named functions")
            if func.id not in FUNCTIONS:
                raise _unsafe(expr, f"'{func.id}' is not an allowed function")
            if node.keywords:
                raise _unsafe(expr, f"{func.id}() takes no keyword arguments")
            if any(isinstance(a, ast.Starred) for a in node.args):
                raise _unsafe(expr, "*arguments are not allowed")
            arity = FUNCTIONS[func.id][1]
            if len(node.args) != arity:
                raise PipelineError(
                    f"In {expr[:80]!r}, {func.id}() takes {arity} argument"
                    f"{'s' if arity != 1 else ''}, not {len(node.args)}."
                )
            continue
        raise _unsafe(expr, _describe(node))
    return tree


def _constant(value: Any) -> Any:
    # numpy scalars, so that 9**9**9 wraps or overflows at once instead of computing a
    # Python integer with millions of digits
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return np.int64(value) if -(2**63) <= value < 2**63 else np.float64(value)
    return np.float64(value)


def _text_sizes(value: Any) -> np.ndarray | None:
    """The length of each text value of VALUE (a scalar: one length), or None if VALUE holds
    no text. Text is what `*` repeats and `+` joins: the operations whose result can be far
    larger than their operands."""
    if isinstance(value, str | bytes):
        return np.array([len(value)], dtype=np.float64)
    if not isinstance(value, pd.Series) or not (
        value.dtype == object or pd.api.types.is_string_dtype(value.dtype)
    ):
        return None
    sizes = np.fromiter(
        (len(v) if isinstance(v, str | bytes) else -1 for v in value),
        dtype=np.float64,
        count=len(value),
    )
    if not (sizes >= 0).any():
        return None
    return np.maximum(sizes, 0)


def _counts(value: Any) -> np.ndarray | None:
    """VALUE's whole numbers (how often `*` repeats a text), or None if it holds none."""
    if isinstance(value, bool | int | np.integer | np.bool_):
        return np.array([max(int(value), 0)], dtype=np.float64)
    if isinstance(value, pd.Series) and (
        pd.api.types.is_integer_dtype(value.dtype) or pd.api.types.is_bool_dtype(value.dtype)
    ):
        return np.clip(value.to_numpy(dtype=np.float64, na_value=0.0), 0, None)
    if isinstance(value, pd.Series) and value.dtype == object:
        # whole numbers of any size among other values (a JSON-lines column, say)
        whole = (bool, int, np.integer, np.bool_)
        counts = [float(v) if isinstance(v, whole) else -1.0 for v in value]
        if any(c >= 0 for c in counts):
            return np.clip(np.array(counts, dtype=np.float64), 0, None)
    return None


class _Evaluator:
    def __init__(self, df: pd.DataFrame, expr: str, max_bytes: int):
        self.df = df
        self.expr = expr
        self.max_bytes = max_bytes
        self.rows = max(len(df), 1)  # a single value ends up once on every row

    def _total(self, per_value: np.ndarray) -> float:
        """The bytes of text values of PER_VALUE lengths, a single one repeated on every row."""
        total = float(per_value.sum()) + OBJECT_OVERHEAD * len(per_value)
        return total * self.rows if len(per_value) == 1 else total

    def _check_size(self, node: ast.BinOp, left: Any, right: Any) -> None:
        """Refuse NODE before it is computed when its text result would pass the limit:
        `text * n` repeats, `text + text` joins, and `text % x` formats to any width."""
        op = type(node.op)
        if op is ast.Mod and _text_sizes(left) is not None:
            raise _unsafe(self.expr, "formatting text with % is not allowed")
        if op is ast.Add:
            sizes = [_text_sizes(left), _text_sizes(right)]
            if any(s is None for s in sizes):
                return
            built = self._total(sizes[0]) + self._total(sizes[1])  # type: ignore[arg-type]
            how = "text joined"
        elif op is ast.Mult:
            text, times = _text_sizes(left), _counts(right)
            if text is None or times is None:
                text, times = _text_sizes(right), _counts(left)
            if text is None or times is None:
                return
            per_value = text * times  # each is one value or one per row
            built = self._total(per_value)
            how = "text repeated"
        elif op is ast.Pow and any(
            isinstance(v, pd.Series) and v.dtype == object for v in (left, right)
        ):
            # Python integers in an object column: ** would compute every digit
            raise PipelineError(
                f"In {self.expr[:80]!r}, ** needs numeric columns; a column holding mixed or "
                "very large whole numbers cannot be raised to a power."
            )
        else:
            return
        if built > self.max_bytes:
            raise CostlyExpression(
                f"The expression {self.expr[:80]!r} would build about {built:,.0f} bytes of "
                f"{how} on {len(self.df):,} rows, over the limit of {self.max_bytes:,} bytes "
                "(data.max_decoded_bytes); build smaller values."
            )

    def run(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return self.run(node.body)
        if isinstance(node, ast.Constant):
            return _constant(node.value)
        if isinstance(node, ast.Name):
            if node.id in self.df.columns:
                if is_array_column(self.df[node.id]):
                    raise PipelineError(
                        f"The expression {self.expr[:80]!r} names '{node.id}', a column holding "
                        "an array per row; expressions work only on columns of single values."
                    )
                return self.df[node.id]
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            if node.id in FUNCTIONS:
                raise PipelineError(
                    f"In {self.expr[:80]!r}, '{node.id}' is a function; call it as {node.id}(x)."
                )
            known = ", ".join(str(c) for c in self.df.columns)
            raise PipelineError(
                f"The expression {self.expr[:80]!r} names '{node.id}', which is not a column; "
                f"the columns are: {known}."
            )
        if isinstance(node, ast.BinOp):
            left, right = self.run(node.left), self.run(node.right)
            self._check_size(node, left, right)
            return _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp):
            value = self.run(node.operand)
            if isinstance(node.op, ast.USub):
                return -value
            if isinstance(node.op, ast.UAdd):
                return +value
            if np.ndim(value) == 0:
                return not value if isinstance(node.op, ast.Not) else ~value
            if isinstance(node.op, ast.Not) and not pd.api.types.is_bool_dtype(value):
                raise PipelineError(
                    f"In {self.expr[:80]!r}, 'not' needs true/false values, such as not (x > 0)."
                )
            return ~value
        if isinstance(node, ast.BoolOp):
            values = [self.run(v) for v in node.values]
            combine = operator.and_ if isinstance(node.op, ast.And) else operator.or_
            result = values[0]
            for value in values[1:]:
                result = combine(result, value)
            return result
        if isinstance(node, ast.Compare):
            left = self.run(node.left)
            result = None
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = self.run(right_node)
                part = _COMPARE[type(op)](left, right)
                result = part if result is None else result & part
                left = right
            return result
        if isinstance(node, ast.Call):
            func = FUNCTIONS[node.func.id][0]  # type: ignore[attr-defined]
            return func(*[self.run(a) for a in node.args])
        raise AssertionError(f"unchecked node {type(node).__name__}")  # check_expression ran


def evaluate(df: pd.DataFrame, expr: str, max_bytes: int | None = None) -> pd.Series:
    """EXPR evaluated on DF's columns, as a Series aligned with DF (scalars are broadcast).

    A text value EXPR would build over MAX_BYTES (default: data.max_decoded_bytes's default),
    counted over every row, is refused (CostlyExpression) before it is built."""
    tree = check_expression(expr)
    limit = DataLimits().decoded_bytes if max_bytes is None else max_bytes
    try:
        with np.errstate(all="ignore"):
            value = _Evaluator(df, expr, limit).run(tree)
    except PipelineError:
        raise
    except Exception as exc:  # a type mismatch in the user's expression
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise PipelineError(f"The expression {expr[:80]!r} cannot be evaluated: {first}.") from None
    if isinstance(value, pd.Series):
        return value.reset_index(drop=True)
    if np.ndim(value) == 0:
        return pd.Series([value] * len(df), dtype=None if len(df) else "float64")
    return pd.Series(value)


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


def _known(step: Step, df: pd.DataFrame, names: list[str]) -> None:
    missing = [n for n in names if n not in df.columns]
    if missing:
        have = ", ".join(str(c) for c in df.columns)
        raise _fail(
            step,
            f"no column {', '.join(repr(m) for m in missing)} at this point; the columns are: "
            f"{have}.",
        )


def _normalise(step: Step, df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    method = step.params.get("method", "zscore")
    columns = step.params["columns"]
    _known(step, df, columns)
    fitted: dict[str, Any] = {}
    df = df.copy()
    for name in columns:
        col = df[name]
        if is_array_column(col):
            raise _fail(step, f"column '{name}' holds an array per row; it cannot be scaled.")
        if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            raise _fail(step, f"column '{name}' is {col.dtype}, not numeric; it cannot be scaled.")
        values = col.astype("float64")
        if method == "zscore":
            mean, std = float(values.mean()), float(values.std(ddof=0))
            if not np.isfinite(std) or std == 0:
                raise _fail(step, f"column '{name}' is constant (or empty): no z-scores.")
            df[name] = (values - mean) / std
            fitted[name] = {"mean": mean, "std": std}
        else:
            low, high = float(values.min()), float(values.max())
            if not np.isfinite(high - low) or high == low:
                raise _fail(step, f"column '{name}' is constant (or empty): it cannot be scaled.")
            df[name] = (values - low) / (high - low)
            fitted[name] = {"min": low, "max": high}
    return df, {"method": method, "fitted": fitted}


def _split(step: Step, df: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    p = step.params
    seed = int(p.get("seed", 0))
    n = len(df)
    order = np.random.default_rng(seed).permutation(n)
    # largest remainder: the part sizes add up to n and are as close to the fractions as
    # whole rows allow (ties go to the earlier part)
    quotas = [n * float(p[k]) for k in SPLIT_PARTS]
    sizes = [int(np.floor(q)) for q in quotas]
    by_remainder = sorted(range(3), key=lambda i: (-(quotas[i] - sizes[i]), i))
    for i in by_remainder[: n - sum(sizes)]:
        sizes[i] += 1
    bounds = np.cumsum([0, *sizes])
    cuts = {k: order[bounds[i] : bounds[i + 1]] for i, k in enumerate(SPLIT_PARTS)}
    # each part keeps the rows in their original order: the split chooses, it does not sort
    parts = {k: df.iloc[np.sort(v)].reset_index(drop=True) for k, v in cuts.items()}
    return parts, {"seed": seed, "rows": {k: len(v) for k, v in parts.items()}}


def apply_step(
    step: Step, df: pd.DataFrame, max_bytes: int | None = None
) -> tuple[Any, dict[str, Any]]:
    """Run one step: the new frame (a dict of three for split) and what it recorded.

    MAX_BYTES bounds the values an expression builds (see `evaluate`)."""
    p = step.params
    record: dict[str, Any] = {"op": step.op, **p}
    if step.op == "select":
        _known(step, df, p["columns"])
        return df[p["columns"]].copy(), record
    if step.op == "rename":
        _known(step, df, list(p["columns"]))
        clash = [
            new
            for old, new in p["columns"].items()
            if new in df.columns and new not in p["columns"] and new != old
        ]
        if clash:
            raise _fail(step, f"the column '{clash[0]}' already exists; rename or drop it first.")
        return df.rename(columns=p["columns"]), record
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
        record["rows_in"], record["rows_out"] = len(df), int(keep.sum())
        return df[keep].reset_index(drop=True), record
    if step.op == "derive":
        try:
            values = evaluate(df, p["expr"], max_bytes)
        except PipelineError as exc:
            raise _fail(step, exc.message) from None
        out = df.copy()
        out[p["column"]] = values.set_axis(df.index)
        return out, record
    if step.op == "normalise":
        out, fitted = _normalise(step, df)
        record.update(fitted)
        return out, record
    parts, info = _split(step, df)
    record.update(info)
    return parts, record


def run(
    pipeline: Pipeline,
    df: pd.DataFrame,
    progress: Callable[[float, str], None] | None = None,
    max_bytes: int | None = None,
) -> tuple[dict[str, pd.DataFrame], list[dict[str, Any]]]:
    """Run every step over DF: the outputs ({"": df} or the three split parts) and the
    record of each step (its parameters, and what it fitted or counted). MAX_BYTES bounds
    the values an expression builds (see `evaluate`)."""
    records = []
    current: Any = df.reset_index(drop=True)
    total = len(pipeline.steps)
    for i, step in enumerate(pipeline.steps):
        current, record = apply_step(step, current, max_bytes)
        records.append(record)
        if progress:
            progress((i + 1) / total, f"{step.label} done")
    outputs = current if isinstance(current, dict) else {"": current}
    return outputs, records
