"""Handlers that every process subscribes when it makes its bus (`get_bus`).

A domain registers a handler at import time with `@handler("type.prefix", "name")` and adds
its module to HANDLER_MODULES. Such a handler runs in every process that has a bus for the
database, which is also what lets `sctk bus dead-letters replay` deliver to it on SQLite,
where a replay reaches only the handlers of the process that publishes it. Handlers made at
run time (a WebSocket's) subscribe on the bus directly instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from sctk.bus.envelope import Handler

# Modules that register bus handlers when imported; each domain adds its own.
HANDLER_MODULES: list[str] = []

_HANDLERS: dict[str, tuple[str, Handler]] = {}


def handler(type_or_prefix: str, name: str) -> Callable[[Handler], Handler]:
    """Register FUNC as the bus handler NAME for messages of TYPE_OR_PREFIX."""

    def register(func: Handler) -> Handler:
        _HANDLERS[name] = (type_or_prefix, func)
        return func

    return register


def registered() -> dict[str, tuple[str, Handler]]:
    """name -> (type or prefix, function) of every registered handler."""
    for module in HANDLER_MODULES:
        importlib.import_module(module)
    return dict(_HANDLERS)
