"""A registry: named entries that plugins declare (job kinds, health checks, maintenance
tasks, anomaly detectors, model kinds, settings sections).

Reading a registry first has every plugin declare its entries for it (`sctk.plugins.declare`
with the registry's hook), so that every process sees every declared entry without
importing the rest of the application by hand. Two entries of
one name from two different places are a clash, refused with both places named, rather than
the later silently replacing the earlier.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from sctk import plugins

T = TypeVar("T")


class DuplicateEntry(ValueError):
    """Two declarations of one name."""


class Registry(Mapping[str, T], Generic[T]):
    """Name -> entry; read-only for everyone but `add`. Entries are listed in the order of
    the plugins that declare them (sctk's foundations first), then in declaration order:
    the same in every process, whichever module happened to be imported first."""

    def __init__(self, what: str, hook: str):
        self.what = what  # "job kind", "health check", ...
        self.hook = hook  # the plugins' function that declares this registry's entries
        if hook not in plugins.HOOKS:
            raise ValueError(f"no plugin hook {hook!r}")
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}

    def add(self, name: str, entry: T, origin: str) -> T:
        """Declare ENTRY as NAME; ORIGIN is the module that declares it (for the listing of
        what each plugin adds, and for a clash's message)."""
        if name in self._entries and self._origins[name] != origin:
            raise DuplicateEntry(
                f"{self.what} '{name}' is declared twice: in {self._origins[name]} and in "
                f"{origin}; rename one of them."
            )
        self._entries[name] = entry
        self._origins[name] = origin
        return entry

    def origin(self, name: str) -> str:
        plugins.declare(self.hook)
        return self._origins[name]

    def __getitem__(self, name: str) -> T:
        plugins.declare(self.hook)
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        plugins.declare(self.hook)
        loaded = plugins.load()

        def rank(item: tuple[int, str]) -> tuple[int, int]:
            order, name = item
            origin = self._origins[name]
            owner = next((i for i, p in enumerate(loaded) if p.owns(origin)), len(loaded))
            return owner, order

        return iter([name for _, name in sorted(enumerate(self._entries), key=rank)])

    def __len__(self) -> int:
        plugins.declare(self.hook)
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        plugins.declare(self.hook)
        return name in self._entries

    def declared_by(self, plugin: plugins.Plugin) -> list[str]:
        """The names PLUGIN's modules declare here."""
        plugins.declare(self.hook)
        return [n for n, o in self._origins.items() if plugin.owns(o)]
