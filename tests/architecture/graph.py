"""The import graph of src/sctk read from the source (nothing is imported), and the
figures the architecture contract and the refactor notes are made of.

``python -m tests.architecture.graph`` prints the figures.
"""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT = "sctk"

# The floors, lowest first. A module may import from its own floor and the floors below;
# an import from a higher floor is an upward import. Domains on one floor may use each
# other, but their packages must not form a circle.
LAYERS: list[tuple[str, set[str]]] = [
    (
        "base",
        {
            "errors",
            "fsutil",
            "tomltext",
            "crashpoints",
            "runstate",
            "logs",
            "config",
            "plugins",
            "registry",
            "plots",
            "__init__",
        },
    ),
    ("storage", {"storage"}),
    ("services", {"security", "bus", "health", "runtime"}),
    ("domains", {"pipeline", "uq", "jobs", "monitoring", "backup"}),
    ("operations", {"ops"}),
    ("faces", {"api", "web", "cli", "client", "docs_build", "__main__"}),
]


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    in_function: bool
    line: int


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    edges: list[Edge] = field(default_factory=list)


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


@cache
def modules() -> dict[str, Module]:
    found = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        name = _module_name(path)
        found[name] = Module(name, path, ast.parse(path.read_text(), str(path)))
    for mod in found.values():
        mod.edges = list(_edges(mod, found))
    return found


def _is_package(mod: Module) -> bool:
    return mod.path.name == "__init__.py"


def _resolve(mod: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.name.split(".")
    if not _is_package(mod):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _walk(node: ast.AST, in_function: bool):
    """Yield (import node, inside a function?) and skip TYPE_CHECKING blocks (types only)."""
    for child in ast.iter_child_nodes(node):
        if _type_checking_block(child):
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function
        inner = in_function or isinstance(
            child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        )
        yield from _walk(child, inner)


def _edges(mod: Module, known: dict[str, Module]):
    for node, in_function in _walk(mod.tree, False):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _resolve(mod, node)
            # "from sctk.backup import runs" names a module, "from sctk.config import Settings"
            # a name in one
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.split(".")[0] == ROOT and target != mod.name:
                yield Edge(mod.name, target, in_function, node.lineno)


def top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(name: str) -> int:
    for index, (_, members) in enumerate(LAYERS):
        if top(name) in members:
            return index
    raise KeyError(f"{name} is on no floor: add its package to LAYERS")


def upward_imports() -> set[tuple[str, str]]:
    return {
        (e.source, e.target)
        for mod in modules().values()
        for e in mod.edges
        if layer_of(e.target) > layer_of(e.source)
    }


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        item = stack.pop()
                        on_stack.discard(item)
                        component.add(item)
                        if item == node:
                            break
                    if len(component) > 1:
                        found.append(component)
    return found


def module_cycles() -> list[set[str]]:
    """Circles between modules, counting imports inside functions too (they are still a
    dependency, only a hidden one). A package's ``__init__`` re-exporting its own modules
    is not counted as a dependency of those modules on it."""
    graph: dict[str, set[str]] = {name: set() for name in modules()}
    for mod in modules().values():
        for e in mod.edges:
            if not e.source.startswith(e.target + "."):
                graph[e.source].add(e.target)
    return sorted(_cycles(graph), key=lambda c: sorted(c))


def package_cycles(ignoring: set[tuple[str, str]] = frozenset()) -> list[set[str]]:
    """Circles between packages, leaving out the module imports named in `ignoring`."""
    graph: dict[str, set[str]] = {}
    for mod in modules().values():
        for e in mod.edges:
            if (e.source, e.target) in ignoring:
                continue
            a, b = top(e.source), top(e.target)
            graph.setdefault(a, set())
            graph.setdefault(b, set())
            if a != b and "__init__" not in (a, b):
                graph[a].add(b)
    return _cycles(graph)


def _calls(name: str) -> int:
    count = 0
    for mod in modules().values():
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                count += called == name
    return count


def kind_string_tests() -> int:
    """Comparisons of a `kind` with a string literal (`kind == "field"` and the like)."""
    count = 0
    for mod in modules().values():
        for node in ast.walk(mod.tree):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            named_kind = any("kind" in ast.unparse(s).lower() for s in sides)
            literal = any(
                isinstance(s, ast.Constant) and s.value in ("field", "tabular") for s in sides
            )
            count += named_kind and literal
    return count


def longest_functions(n: int = 10) -> list[tuple[int, str]]:
    found = []
    for mod in modules().values():
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found.append((node.end_lineno - node.lineno + 1, f"{mod.name}.{node.name}"))
    return sorted(found, reverse=True)[:n]


def repeated_names() -> list[str]:
    """Module names used by two modules below the faces (cli/ and api/ mirror the domains
    by design: `cli/backup.py` and `api/routes/backup.py` are the two faces of `backup`)."""
    inner = [name for name in modules() if layer_of(name) < len(LAYERS) - 1]
    counts = Counter(name.rpartition(".")[2] for name in inner)
    return sorted(n for n, c in counts.items() if c > 1 and n != "__init__")


def figures() -> dict[str, object]:
    edges = [e for mod in modules().values() for e in mod.edges]
    in_function = 0
    for mod in modules().values():
        in_function += sum(1 for _, inside in _walk(mod.tree, False) if inside)
    return {
        "modules": len(modules()),
        "imports inside functions (all)": in_function,
        "sctk modules imported inside functions": sum(e.in_function for e in edges),
        "make_engine calls": _calls("make_engine"),
        "dispose calls": _calls("dispose"),
        "kind-string tests": kind_string_tests(),
        "module circles": [sorted(c) for c in module_cycles()],
        "package circles": [sorted(c) for c in package_cycles()],
        "upward imports": sorted(upward_imports()),
        "longest functions": longest_functions(),
        "module names used twice below the faces": repeated_names(),
    }


if __name__ == "__main__":
    for key, value in figures().items():
        if isinstance(value, list):
            print(f"{key}: {len(value)}")
            for item in value:
                print(f"    {item}")
        else:
            print(f"{key}: {value}")
