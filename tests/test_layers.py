"""The layering holds: no import cycle between fedweave's modules, type-only imports and imports
inside functions counted, and the rules of docs/architecture.md (nothing imports the CLI, the
config and the records import no algorithm, callbacks never name the runner)."""

from __future__ import annotations

import ast
from pathlib import Path

import fedweave

ROOT = Path(fedweave.__file__).parent


def import_graph() -> dict[str, set[str]]:
    """Module → the fedweave modules it imports (any import statement, anywhere in the file)."""
    files = {".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__"):
             p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name in files)
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] \
                    if node.level else []
                target = ".".join([*base, *([node.module] if node.module else [])])
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    out.add(sub if sub in files else target)
        graph[mod] = {m for m in out if m in files and m != mod}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return [*path[path.index(w):], w]
            if w not in state and (found := visit(w)) is not None:
                return found
        state[v] = 2
        path.pop()
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)) is not None:
            return found
    return None


def test_no_import_cycle_counting_type_only_imports() -> None:
    assert cycle(import_graph()) is None


def test_lower_layers_never_import_higher_ones() -> None:
    graph = import_graph()
    for mod, deps in graph.items():
        if not mod.startswith(("fedweave.cli", "fedweave.__main__")):
            assert not [d for d in deps if d.startswith("fedweave.cli")], mod
        if mod.startswith(("fedweave.config", "fedweave.records", "fedweave.callbacks",
                           "fedweave.core", "fedweave.data", "fedweave.training",
                           "fedweave.interrupt", "fedweave.evaluation")):
            assert not [d for d in deps if d.startswith(("fedweave.algorithms",
                                                         "fedweave.runner"))], mod
    assert cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]  # the check itself finds one
