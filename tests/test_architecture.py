"""The package's shape: no import circle anywhere in gemma_lab (imports inside functions and
under TYPE_CHECKING count), and the layers only point down."""

from __future__ import annotations

import ast
from pathlib import Path

import gemma_lab

ROOT = Path(gemma_lab.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import sub` imports the submodule pkg.sub when there is one.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_imports_it_should():
    graph = _import_graph()
    assert "gemma_lab.runtime" in graph["gemma_lab.session"]
    assert "gemma_lab.forward.run" in graph["gemma_lab.forward"]
    # an import inside a function counts
    assert "gemma_lab.widgets" in graph["gemma_lab.magics._gemma_magics"]
    # and one under TYPE_CHECKING
    assert "gemma_lab.runtime" in graph["gemma_lab.scoring"]


def test_no_import_circle_in_gemma_lab():
    assert _cycles(_import_graph()) == []


def test_nothing_below_the_session_imports_it():
    graph = _import_graph()
    above = {"gemma_lab", "gemma_lab.session", "gemma_lab.cli", "gemma_lab.testing"}
    allowed = ("gemma_lab.magics", "gemma_lab.widgets")
    importers = {name for name, targets in graph.items() if "gemma_lab.session" in targets}
    assert {name for name in importers - above if not name.startswith(allowed)} == set()
    # operations depend on the runtime, never on the session facade
    for name in ("gemma_lab.generation", "gemma_lab.scoring", "gemma_lab.decoding",
                 "gemma_lab.inspect.trace", "gemma_lab.inspect.attribution",
                 "gemma_lab.finetune.trainer", "gemma_lab.finetune.adapters"):
        assert "gemma_lab.session" not in graph[name], name


def test_the_magics_and_widgets_call_only_the_session():
    graph = _import_graph()
    # (generation / scoring hold the record types the session returns: those may be named)
    below = ("gemma_lab.decoding", "gemma_lab.runtime", "gemma_lab.forward",
             "gemma_lab.inspect.trace", "gemma_lab.inspect.attribution",
             "gemma_lab.finetune.trainer")
    for name, targets in graph.items():
        if name.startswith(("gemma_lab.magics", "gemma_lab.widgets")):
            assert not {t for t in targets if t.startswith(below)}, (name, targets)
