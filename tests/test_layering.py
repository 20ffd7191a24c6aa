"""The project's import graph keeps the layers of DESIGN.md.

Every ``.py`` file of the product packages is parsed with ``ast`` (nothing is imported) and
turned into a module graph: an edge per ``import`` / ``from ... import`` (function-level
imports included, imports under ``if TYPE_CHECKING:`` left out), plus an edge to every
package ``__init__`` the import runs on the way (``from store.index import X`` runs
``store/__init__.py`` too), except the importer's own enclosing packages, which are already
running. The tests assert:

* no import cycles;
* no import of a private module (a path segment starting with ``_``) from outside the
  package that owns it: ``heads._grid`` is importable inside ``heads/`` only,
  ``extract.dump._assembly`` inside ``extract/dump/`` only;
* no upward import: each package imports only the floors below it (``LAYERS``);
* at most ``MAX_EXTRACT_TOP`` modules directly in ``extract/``.

Run it as a script for the figures: ``python -m tests.test_layering``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("store", "heads", "extract", "fusion", "benchmarks")
#: Which top-level packages (or single modules of them) each package may import.
LAYERS: dict[str, tuple[str, ...]] = {
    "store": ("store",),
    "heads": ("store", "heads"),
    "extract": ("store", "heads", "extract"),
    "fusion": ("store", "heads.metrics", "fusion"),
    "benchmarks": PACKAGES,
}
MAX_EXTRACT_TOP = 12


@dataclass(frozen=True)
class Edge:
    """One import: ``importer`` runs ``target`` (``line`` of the importer's file)."""

    importer: str
    target: str
    line: int


def module_name(path: Path) -> str:
    """``extract/dump/__init__.py`` -> ``extract.dump``; ``store/index.py`` -> ``store.index``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_modules() -> dict[str, Path]:
    """Every module of the product packages, by dotted name."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, type_checking: bool = False) -> list[ast.Import | ast.ImportFrom]:
    """Every import node of ``tree`` (outside ``if TYPE_CHECKING:`` blocks unless ``type_checking``)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if not type_checking and isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module a (possibly relative) ``from`` import names."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _with_packages(importer: str, target: str, modules: dict[str, Path]) -> list[str]:
    """``target`` and every enclosing package the import runs that is not the importer's own."""
    parts = target.split(".")
    out = []
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name not in modules:
            continue
        if importer == name or (importer.startswith(name + ".") and i < len(parts)):
            continue  # an enclosing package of the importer: already running
        out.append(name)
    return out


def import_edges(modules: dict[str, Path] | None = None, *, type_checking: bool = False) -> list[Edge]:
    """Every edge of the product's import graph (see the module docstring), each once.

    Args:
        modules: the modules to read (default: ``product_modules()``).
        type_checking: also count the imports under ``if TYPE_CHECKING:``.
    """
    modules = product_modules() if modules is None else modules
    edges: dict[Edge, None] = {}
    for importer, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in _imports(tree, type_checking):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve(node, importer, is_package)
                targets = []
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                if target.split(".")[0] not in PACKAGES:
                    continue
                for name in _with_packages(importer, target, modules):
                    if name != importer:
                        edges[Edge(importer, name, node.lineno)] = None
    return list(edges)


def find_cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(components)


def private_imports(edges: list[Edge]) -> list[Edge]:
    """Imports of a private module from outside the package that owns it."""
    bad = []
    for edge in edges:
        parts = edge.target.split(".")
        for i, part in enumerate(parts):
            if part.startswith("_") and not part.startswith("__"):
                owner = ".".join(parts[:i])
                if not edge.importer.startswith(owner + "."):
                    bad.append(edge)
                break
    return bad


def upward_imports(edges: list[Edge]) -> list[Edge]:
    """Imports of a package (or module) above the importer's floor.

    The enclosing packages of an allowed module are allowed too (importing ``heads.metrics``
    runs ``heads/__init__.py``; Python gives no way around it).
    """
    bad = []
    for edge in edges:
        allowed = LAYERS[edge.importer.split(".")[0]]
        target = edge.target
        if not any(target == a or target.startswith(a + ".") or a.startswith(target + ".") for a in allowed):
            bad.append(edge)
    return bad


def extract_top_modules() -> list[str]:
    """The modules directly in ``extract/`` (``__init__.py`` not counted)."""
    return sorted(p.name for p in (ROOT / "extract").glob("*.py") if p.name != "__init__.py")


def _show(edges: list[Edge]) -> str:
    return "\n".join(f"{e.importer} (line {e.line}) -> {e.target}" for e in edges)


def test_graph_is_parsed() -> None:
    """The checker sees known edges (a checker that finds nothing checks nothing)."""
    edges = {(e.importer, e.target) for e in import_edges()}
    known = {
        ("extract.run", "extract.dump.settings"),  # a module-level import
        ("extract.run", "extract.dump"),  # ... and the package __init__ it runs on the way
        ("extract.dump.pipeline", "store"),  # across packages
        ("extract.dump.worker", "extract.media.decode"),
        ("benchmarks.recipes.steps", "benchmarks.pipeline.steps"),
    }
    assert known <= edges, known - edges
    assert ("extract.dump._assembly", "extract.dump.jobs") not in edges  # a TYPE_CHECKING import
    assert ("extract.dump._assembly", "extract.dump.jobs") in {
        (e.importer, e.target) for e in import_edges(type_checking=True)
    }
    assert len(edges) > 300


def test_checker_flags_a_cycle_a_private_and_an_upward_import() -> None:
    """The three rules on a hand-made graph."""
    edges = [
        Edge("heads.a", "heads.b", 1), Edge("heads.b", "heads.c", 1), Edge("heads.c", "heads.a", 1),
        Edge("fusion.x", "heads._grid", 1), Edge("heads.d", "heads._grid", 1),
        Edge("store.y", "heads.b", 1), Edge("fusion.z", "heads.metrics", 1),
    ]
    assert find_cycles(edges) == [["heads.a", "heads.b", "heads.c"]]
    assert private_imports(edges) == [edges[3]]
    assert upward_imports(edges) == [edges[3], edges[5]]


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_edges())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_imports_across_packages() -> None:
    bad = private_imports(import_edges())
    assert not bad, "imports of another package's private module:\n" + _show(bad)


def test_imports_only_go_down() -> None:
    bad = upward_imports(import_edges())
    assert not bad, "upward imports:\n" + _show(bad)


def test_extract_top_level_is_small() -> None:
    top = extract_top_modules()
    assert len(top) <= MAX_EXTRACT_TOP, f"{len(top)} modules directly in extract/: {top}"


if __name__ == "__main__":
    all_edges = import_edges()
    print(f"modules: {len(product_modules())}, import edges: {len(all_edges)}")
    with_type_checking = import_edges(type_checking=True)
    for label, graph in (("cycles", all_edges), ("cycles with TYPE_CHECKING imports", with_type_checking)):
        found = find_cycles(graph)
        print(f"{label}: {len(found)}")
        for cycle in found:
            print("  " + " <-> ".join(cycle))
    for title, rows in (("private imports", private_imports(all_edges)), ("upward imports", upward_imports(all_edges))):
        print(f"{title}: {len(rows)}")
        for row in rows:
            print(f"  {row.importer} (line {row.line}) -> {row.target}")
    print(f"modules directly in extract/: {len(extract_top_modules())}")
