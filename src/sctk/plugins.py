"""Plugins: how the built-in domains and installed packages add to sctk's registries.

A plugin is a module named by an entry point of the group `sctk.plugins`. It holds one
function per registry it adds to, named after the registry's hook (HOOKS below); called,
such a function declares its entries with the registry's own decorator (`@job_kind`,
`@check`, `@task`, `@detector`, `@model_kind`, `@settings_section`), usually by importing the
modules that carry them. sctk's own domains are plugins of the same kind (one module per domain,
`sctk/<domain>/plugin.py`, named in BUILTIN below so that they load even where sctk runs
from a source tree without its package metadata), and an installed package adds exactly what
a domain can:

    [project.entry-points."sctk.plugins"]
    mylab = "mylab.sctk_plugin"

Plugin modules are imported once per process, sctk's own first and then the others by name,
so that the same set gives the same registries in every process (the API, a worker's pool
children, the scheduler). A registry calls its hook of every plugin on its first read, and
only then: listing the health checks does not import the UQ engine. A built-in plugin that
fails is a broken install and raises; another plugin that fails is left out with its error
kept, shown by `sctk plugins list`, and sctk runs without it.
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from importlib import metadata
from typing import Any

GROUP = "sctk.plugins"
BUILTIN_DIST = "sctk"
# sctk's own plugins (sctk.<name>.plugin), foundations first so that what they declare is
# listed first (`sctk health` shows the database before what depends on it); installed
# packages' plugins load after them, by name
BUILTIN = ("health", "security", "jobs", "pipeline", "uq", "monitoring", "backup", "ops")
# registry hook -> what it declares
HOOKS = {
    "job_kinds": "job kinds",
    "health_checks": "health checks",
    "maintenance_tasks": "maintenance tasks",
    "anomaly_detectors": "anomaly detectors",
    "model_kinds": "model kinds",
    "settings_sections": "settings sections",
}

log = logging.getLogger(__name__)


@dataclass
class Plugin:
    name: str  # the entry point's name
    module: str
    dist: str  # the distribution that declares it
    version: str
    builtin: bool
    error: str | None = None  # why it could not be loaded (or a hook of it failed)
    hooks: tuple[str, ...] = ()
    _module: Any = None

    @property
    def package(self) -> str:
        """Where what it declares lives: 'sctk.uq' for sctk.uq.plugin, 'mylab' for
        mylab.sctk_plugin (a registry entry belongs to the plugin of its module)."""
        if self.builtin:
            return self.module.rpartition(".")[0]
        return self.module.partition(".")[0]

    def owns(self, module: str) -> bool:
        return module == self.package or module.startswith(self.package + ".")


_lock = threading.RLock()
_plugins: list[Plugin] | None = None
_partial: list[Plugin] = []  # while loading: a plugin that looks into a registry sees these
_declared: set[str] = set()  # hooks called in this process
_declaring: set[str] = set()  # hooks being called now (a hook reading its own registry)


class PluginError(Exception):
    """A built-in plugin could not be loaded: the installation is broken."""


def _every_plugin() -> list[Plugin]:
    """sctk's own plugins, then every installed package's, in the same order in every
    process (and so the same registries)."""
    version = metadata.version(BUILTIN_DIST) if _installed(BUILTIN_DIST) else "source"
    found = [
        Plugin(name, f"sctk.{name}.plugin", BUILTIN_DIST, version, builtin=True) for name in BUILTIN
    ]
    others = [ep for ep in metadata.entry_points(group=GROUP) if _dist(ep) != BUILTIN_DIST]
    for ep in sorted(others, key=lambda ep: (ep.name, ep.value)):
        version = ep.dist.version if ep.dist is not None else "?"
        found.append(Plugin(ep.name, ep.value, _dist(ep) or "?", version, builtin=False))
    return found


def _dist(ep: metadata.EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else ""


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def load() -> list[Plugin]:
    """Load every plugin once per process; the plugins, in load order."""
    global _plugins
    if _plugins is not None:
        return _plugins
    with _lock:
        if _plugins is not None:
            return _plugins
        if _partial:
            return _partial  # a plugin being imported looked into a registry
        try:
            for plugin in _every_plugin():
                _partial.append(plugin)
                try:
                    plugin._module = importlib.import_module(plugin.module)
                except Exception as exc:  # a plugin's own bug must not stop sctk
                    _failed(plugin, "failed to load", exc)
                    continue
                plugin.hooks = tuple(h for h in HOOKS if callable(getattr(plugin._module, h, None)))
            _plugins = list(_partial)
        finally:
            _partial.clear()
        return _plugins


def _failed(plugin: Plugin, doing: str, exc: Exception) -> None:
    if plugin.builtin:
        raise PluginError(f"sctk's plugin {plugin.name} {doing}: {exc}") from exc
    plugin.error = f"{doing}: {type(exc).__name__}: {exc}"
    log.warning("plugin %s (%s) left out: %s", plugin.name, plugin.dist, plugin.error)


def declare(hook: str) -> None:
    """Have every plugin declare its entries of HOOK's registry; once per process."""
    if hook in _declared:
        return
    with _lock:
        if hook in _declared or hook in _declaring:
            return
        _declaring.add(hook)
        try:
            for plugin in load():
                if hook in plugin.hooks and plugin.error is None:
                    try:
                        getattr(plugin._module, hook)()
                    except Exception as exc:  # see _failed
                        _failed(plugin, f"failed to declare its {HOOKS[hook]}", exc)
            _declared.add(hook)
        finally:
            _declaring.discard(hook)


def owner(module: str) -> Plugin | None:
    """The loaded plugin that MODULE belongs to."""
    return next((p for p in load() if p.owns(module)), None)


def third_party() -> list[Plugin]:
    return [p for p in load() if not p.builtin]
