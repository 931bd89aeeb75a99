"""TOML text parsed with a bound on nesting.

The standard library's parser recurses once per nested array or inline table, so a few
kilobytes of `a = [[[[...` end in a RecursionError (a traceback in the CLI, a 500 over HTTP).
Every TOML sctk reads from a user (sctk.toml, pipeline and schema files, model configs) goes
through `loads`, which answers that, and any nesting deeper than MAX_DEPTH, with one sentence.
"""

from __future__ import annotations

import tomllib
from typing import Any

from sctk.errors import SctkError

# sctk's own files nest three levels at most ([monitor.alerts.rules], a list in a table)
MAX_DEPTH = 32


def depth(value: Any) -> int:
    """How many tables and arrays deep VALUE nests (a scalar: 0), without recursing."""
    deepest = 0
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, level + 1) for c in children if isinstance(c, dict | list))
    return deepest


def loads(text: str, what: str, error: type[SctkError] = SctkError) -> dict[str, Any]:
    """TEXT parsed as TOML; WHAT names it in the sentence ERROR carries when it nests deeper
    than MAX_DEPTH. A syntax error is left to the caller (tomllib.TOMLDecodeError)."""
    too_deep = error(
        f"{what} nests tables or arrays more than {MAX_DEPTH} levels deep; flatten it."
    )
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise too_deep from None
    if depth(data) > MAX_DEPTH:
        raise too_deep
    return data
