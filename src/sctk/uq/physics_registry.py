"""The physics functions a model config, a CLI flag or a stored model may name.

A name is looked up here, never imported as given: what a request names runs with the
caller's own numbers, so `"pickle:loads"` or `"os:system"` would be code execution. A name
is registered when it is

- one of sctk's built-ins (BUILTINS, with the short aliases of ALIASES),
- declared by an installed package under the entry-point group `sctk.physics`
  (`drag = "mypkg.models:drag"` in its pyproject's `[project.entry-points."sctk.physics"]`;
  a config may then say "drag" or "mypkg.models:drag"),
- listed by an admin in sctk.toml (`[uq] physics_allowed = ["mypkg.models:drag"]`), in scope
  through `admitted()` where the settings are known (the API, the CLI, the worker, a model
  load), or
- registered by the user's own Python code with `register()` (that code runs anyway).

Every registered name is canonical as 'package.module:function': that is what a model stores
and what it is looked up by when it is loaded again.
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from importlib import metadata
from pathlib import Path
from typing import Any

from sctk import config
from sctk.config import PHYSICS_NAME_PATTERN
from sctk.errors import SctkError

ENTRY_POINT_GROUP = "sctk.physics"
SETTING = "[uq] physics_allowed"
NAME_RE = re.compile(PHYSICS_NAME_PATTERN)

BUILTINS: tuple[str, ...] = (
    "sctk.uq.flow:coarse_physics",  # the flow demo's coarse solver (fields)
    "sctk.uq.fields:identity",  # S(x) = x, the input fields carried forward (fields)
)
ALIASES: dict[str, str] = {
    "coarse": "sctk.uq.flow:coarse_physics",
    "coarse solver": "sctk.uq.flow:coarse_physics",
    "identity": "sctk.uq.fields:identity",
}

PhysicsFn = Callable[..., Any]

_registered: dict[str, PhysicsFn] = {}
_admitted: ContextVar[tuple[str, ...]] = ContextVar("sctk_physics_admitted", default=())


class PhysicsNotRegistered(SctkError):
    """A name that no registry holds: refused, never imported."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


def register(name: str, fn: PhysicsFn) -> None:
    """Register FN under NAME ('package.module:function') for this process.

    For the user's own Python code; the service registers nothing a request names."""
    if not NAME_RE.match(name) or not callable(fn):
        raise SctkError(
            f"Register a function under a 'package.module:function' name, not {name!r:.120}."
        )
    _registered[name] = fn


@contextmanager
def admitted(names: Iterable[str]) -> Iterator[None]:
    """Within the block, the admin-listed NAMES (sctk.toml's [uq] physics_allowed) count
    as registered too."""
    token = _admitted.set(tuple(names))
    try:
        yield
    finally:
        _admitted.reset(token)


def admin_listed(home: Path | str) -> tuple[str, ...]:
    """The names [uq] physics_allowed of the data directory HOME's settings."""
    return tuple(config.load(home).settings.uq.physics_allowed)


def _entry_points() -> dict[str, str]:
    """alias -> 'module:function' of every installed package's `sctk.physics` entry point."""
    return dict(_scan(tuple(sys.path)))


@functools.lru_cache(maxsize=4)
def _scan(path: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    # a scan of every installed distribution takes tens of milliseconds: once per sys.path
    # (a package installed into a running process is seen after a restart)
    found = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        value = ep.value.strip()
        if NAME_RE.match(value):
            found.append((ep.name, value))
    return tuple(found)


def _aliases() -> dict[str, str]:
    return {**_entry_points(), **ALIASES}


def _names(aliases: dict[str, str]) -> set[str]:
    return {*BUILTINS, *aliases.values(), *_admitted.get(), *_registered}


def choices() -> list[str]:
    """Every name registered in this scope, canonical ('package.module:function')."""
    return sorted(_names(_aliases()))


def check(name: Any) -> str:
    """The canonical name NAME stands for, or one sentence naming the registered choices."""
    if not isinstance(name, str) or not name.strip():
        shown = repr(name)[:120]
        raise PhysicsNotRegistered(
            shown, f"'physics' must be the name of a registered physics function; {offer()}"
        )
    key = name.strip()
    if key in BUILTINS or key in _registered or key in _admitted.get():
        return key
    aliases = _aliases()
    canonical = aliases.get(key) or ALIASES.get(key.lower()) or key
    if canonical in _names(aliases):
        return canonical
    shown = repr(key[:120])
    raise PhysicsNotRegistered(shown, f"The physics {shown} is not registered; {offer()}")


def offer() -> str:
    """The end of a refusal: the registered names, and how an admin adds one."""
    shown = ", ".join(choices()[:20])
    return (
        f"choose one of {shown} (an admin adds more under {SETTING} in sctk.toml, or an "
        f"installed package under the '{ENTRY_POINT_GROUP}' entry points)."
    )


class PhysicsUnavailable(SctkError):
    """A registered name whose function cannot be had: its package is missing or broken."""


def source(canonical: str) -> str:
    """Where the registered name CANONICAL comes from, in words."""
    if canonical in BUILTINS:
        return "one of sctk's built-ins"
    if canonical in _registered:
        return "registered by this process's own code"
    for alias, value in _entry_points().items():
        if value == canonical:
            return f"declared by an installed package's '{ENTRY_POINT_GROUP}' entry point '{alias}'"
    return f"listed under {SETTING} in sctk.toml"


def resolve(name: Any) -> PhysicsFn:
    """The function registered as NAME; imported only once a registry holds the name.

    Two refusals, told apart: PhysicsNotRegistered (no registry holds the name: nothing is
    imported) and PhysicsUnavailable (registered, but its module or function cannot be had)."""
    canonical = check(name)
    if canonical in _registered:
        return _registered[canonical]
    module, _, attr = canonical.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        why = f"its module '{exc.name or module}' is not installed"
    except AttributeError:
        why = f"the module '{module}' has no '{attr}'"
    except Exception as exc:  # the package's own code failed while it was imported
        why = f"importing '{module}' failed: {type(exc).__name__}: {str(exc)[:200]}"
    else:
        if callable(fn):
            return fn
        why = f"'{attr}' in '{module}' is not a function"
    raise PhysicsUnavailable(
        f"The physics '{canonical}' is registered ({source(canonical)}) but cannot be used: "
        f"{why.rstrip('.')}; install or fix the package that holds it, or remove it from "
        f"{SETTING} or that package's entry points."
    ) from None


def available(name: Any) -> str:
    """The canonical name NAME stands for, once its function imports: at submission both
    refusals are a sentence then, not a failed job later."""
    canonical = check(name)
    resolve(canonical)
    return canonical
