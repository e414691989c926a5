"""Imports inside nas_kws run one way: no cycle (module level or lazy, inside a function) and no
import from a layer up into a higher one, so each module can be read, tested and reused without
what sits above it. The graph comes from the source (ast), so lazy imports count too."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "nas_kws"

# Bottom to top; a module may import from its own layer and the layers below. Names are relative
# to nas_kws ("nas_kws" is the root package itself); "pkg.*" covers a package and everything under
# it, and a module named exactly overrides the wildcard (data.commands is not in data.*'s layer).
LAYERS: list[list[str]] = [
    ["nas_kws", "fileio", "errors", "device", "distributed", "config", "plots"],
    ["features", "data.*"],
    ["models.layers", "models.checks", "models.registry"],
    ["models.bcresnet", "models.dscnn", "models.mbconv"],
    ["models.genotype"],
    ["models.proxyless_kws"],
    ["models.factory", "models"],
    ["profiling", "evaluation"],
    ["runs", "train"],
    ["nas.*"],
    ["quant.*"],
    ["rebuild"],
    ["report_rows", "zoo", "report"],
    ["sweep.*"],
    ["cliflags", "train_commands", "data.commands", "profiling_commands", "nas.commands",
     "quant.commands", "quant.export_commands", "report_commands", "demo_commands",
     "zoo_commands", "sweep.commands", "sweep.launch", "cli", "__main__"],
]

# Upward imports outside models/ that predate this test, as (importer, imported); each entry
# must still exist, so the list empties as they are fixed.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int
    lazy: bool

    def __str__(self) -> str:
        where = "lazy, " if self.lazy else ""
        return f"{self.importer} -> {self.imported} ({where}line {self.line})"


@cache
def modules() -> dict[str, Path]:
    """Every module under nas_kws by dotted name; a package is its __init__.py."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _resolve(name: str) -> str | None:
    """The nas_kws module an imported name lives in (a.b.func -> a.b), or None if outside."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the importing module's package
        package = module if modules()[module].name == "__init__.py" else module.rpartition(".")[0]
        anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        base = f"{anchor}.{base}" if base else anchor
    return [f"{base}.{alias.name}" for alias in node.names]


def _imports(module: str, source: str) -> list[Edge]:
    edges = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                targets = {_resolve(name) for name in _imported_names(child, module)}
                edges.extend(Edge(module, target, child.lineno, lazy)
                             for target in sorted(targets - {None, module}))
            visit(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(source), False)
    return edges


@cache
def graph() -> dict[str, list[Edge]]:
    return {module: _imports(module, path.read_text()) for module, path in modules().items()}


def layer_of(module: str) -> int | None:
    """The layer naming `module` exactly, else the one whose "pkg.*" covers it."""
    name = module.removeprefix("nas_kws.")
    exact = [i for i, layer in enumerate(LAYERS) if name in layer]
    if exact:
        return exact[0]
    covering = [i for i, layer in enumerate(LAYERS) for entry in layer
                if entry.endswith(".*") and (name + ".").startswith(entry[:-1])]
    return covering[0] if covering else None


def upward_imports() -> set[tuple[str, str]]:
    """(importer, imported) pairs going up a layer; undeclared modules are reported elsewhere."""
    layers = {module: layer_of(module) for module in modules()}
    return {(e.importer, e.imported) for edges in graph().values() for e in edges
            if None not in (layers[e.importer], layers[e.imported])
            and layers[e.imported] > layers[e.importer]}


def find_cycles() -> list[str]:
    """Every group of modules that import each other in a circle (a strongly connected
    component, Tarjan), shown as one cycle through it and the whole group."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[str] = []

    def connect(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for edge in graph()[module]:
            if edge.imported not in index:
                connect(edge.imported)
                low[module] = min(low[module], low[edge.imported])
            elif edge.imported in stack:
                low[module] = min(low[module], index[edge.imported])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1:
                cycle = " -> ".join(_cycle_through(sorted(group)))
                groups.append(f"{cycle}  (the circle holds {', '.join(sorted(group))})")

    for module in modules():
        if module not in index:
            connect(module)
    return groups


def _cycle_through(group: list[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start, paths = group[0], {group[0]: [group[0]]}
    frontier = [start]
    while frontier:
        nxt = []
        for module in frontier:
            for edge in graph()[module]:
                if edge.imported == start:
                    return paths[module] + [start]
                if edge.imported in group and edge.imported not in paths:
                    paths[edge.imported] = paths[module] + [edge.imported]
                    nxt.append(edge.imported)
        frontier = nxt
    raise AssertionError(f"no cycle through {group}")


def test_graph_sees_lazy_relative_and_submodule_imports():
    source = ("import torch\nfrom . import genotype\nfrom nas_kws.models import create_model\n"
              "def build():\n    from nas_kws.models.registry import list_models\n")
    edges = {(e.imported, e.lazy) for e in _imports("nas_kws.models.factory", source)}
    assert edges == {("nas_kws.models.genotype", False), ("nas_kws.models", False),
                     ("nas_kws.models.registry", True)}


def test_every_module_has_one_declared_layer():
    entries = [entry for layer in LAYERS for entry in layer]
    assert len(entries) == len(set(entries)), "a name is declared in two layers"
    names = {module.removeprefix("nas_kws.") for module in modules()}
    gone = [e for e in entries if e.removesuffix(".*") not in names]
    assert not gone, f"LAYERS names modules that no longer exist: {gone}"
    undeclared = [m for m in modules() if layer_of(m) is None]
    assert not undeclared, f"add these modules to a layer in LAYERS: {undeclared}"


def test_no_import_cycles():
    cycles = find_cycles()
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def test_no_upward_imports():
    offenders = [str(e) for edges in graph().values() for e in edges
                 if (e.importer, e.imported) in upward_imports() - KNOWN_VIOLATIONS]
    assert not offenders, ("imports from a lower layer into a higher one (see LAYERS):\n  "
                           + "\n  ".join(offenders))


def test_models_allows_no_upward_import():
    in_models = [pair for pair in KNOWN_VIOLATIONS
                 if any(f"{m}.".startswith("nas_kws.models.") for m in pair)]
    assert not in_models, f"models/ must stay clean; remove from KNOWN_VIOLATIONS: {in_models}"


def test_known_violations_are_still_there():
    fixed = sorted(KNOWN_VIOLATIONS - upward_imports())
    assert not fixed, f"fixed, so remove from KNOWN_VIOLATIONS: {fixed}"
