"""The expression sandbox of derive and filter steps: a small grammar checked with `ast`,
evaluated node by node on a frame's columns.

An expression is parsed with Python's `ast` and checked against a small grammar -- column
names, numbers, text and true/false constants, arithmetic, comparisons, and/or/not (also
& | ~), and the functions in FUNCTIONS -- and the checked tree is evaluated here, node by
node, on the columns. No string is ever handed to eval(), exec() or pandas' own expression
parser. A value of text an expression would build past a byte limit is refused before it is
built (CostlyExpression).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from sctk.errors import SctkError
from sctk.pipeline.arrays import is_array_column
from sctk.pipeline.limits import OBJECT_OVERHEAD, DataLimits

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
