"""What each loaded plugin adds to sctk's registries (`sctk plugins list`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sctk import plugins
from sctk.health.registry import CHECKS
from sctk.jobs.kinds import KINDS
from sctk.monitoring.anomaly import DETECTORS
from sctk.ops.tasks import TASKS
from sctk.registry import Registry
from sctk.uq.model_kind import MODEL_KINDS

REGISTRIES: dict[str, Registry] = {
    "job kinds": KINDS,
    "health checks": CHECKS,
    "maintenance tasks": TASKS,
    "anomaly detectors": DETECTORS,
    "model kinds": MODEL_KINDS,
}


@dataclass
class PluginView:
    name: str
    package: str  # the distribution that declares it, and its version
    builtin: bool
    module: str
    adds: dict[str, list[str]] = field(default_factory=dict)  # registry -> names
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def describe() -> list[PluginView]:
    """Every plugin in load order, with the names it declares in each registry."""
    views = []
    for plugin in plugins.load():
        adds = {}
        if plugin.error is None:
            for what, registry in REGISTRIES.items():
                names = registry.declared_by(plugin)
                if names:
                    adds[what] = names
        views.append(
            PluginView(
                plugin.name,
                f"{plugin.dist} {plugin.version}",
                plugin.builtin,
                plugin.module,
                adds,
                plugin.error,
            )
        )
    return views
