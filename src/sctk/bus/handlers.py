"""Handlers that every process subscribes when it makes its bus (`get_bus`).

A plugin (sctk.plugins: a domain's, or an installed package's) declares a handler with
`@handler("type.prefix", "name")`. Such a handler runs in every process that has a bus for the
database, which is also what lets `sctk bus dead-letters replay` deliver to it on SQLite,
where a replay reaches only the handlers of the process that publishes it. Handlers made at
run time (a WebSocket's) subscribe on the bus directly instead.
"""

from __future__ import annotations

from collections.abc import Callable

from sctk.bus.envelope import Handler
from sctk.registry import Registry

HANDLERS: Registry[tuple[str, Handler]] = Registry("bus handler", "bus_handlers")


def handler(type_or_prefix: str, name: str) -> Callable[[Handler], Handler]:
    """Register FUNC as the bus handler NAME for messages of TYPE_OR_PREFIX."""

    def register(func: Handler) -> Handler:
        HANDLERS.add(name, (type_or_prefix, func), func.__module__)
        return func

    return register


def registered() -> dict[str, tuple[str, Handler]]:
    """name -> (type or prefix, function) of every registered handler."""
    return dict(HANDLERS)
