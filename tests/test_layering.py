"""The house's floors, read from the source with `ast` so they stay true: reward/ and data_mix/ import no
other floor above them, eval/ only reward/, posttrain/ anything below; no import cycle among the project's
modules; a project import inside a function only where a heavy dependency is deferred on purpose, with a
one-line why on the line; posttrain/round.py is a leaf that nothing imports."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("posttrain", "reward", "data_mix", "eval")
MAY_IMPORT = {"reward": {"reward"}, "data_mix": {"data_mix"}, "eval": {"eval", "reward"},
              "posttrain": set(PACKAGES)}


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


MODULES = modules()


def resolve(name: str) -> str | None:
    """The project module a dotted import name lands in (`from a.b import c`: a.b.c or a.b)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> list[tuple[ast.stmt, str, bool]]:
    """(statement, project module, inside a function) for every project import of `module`."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f) if n is not f}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            assert not isinstance(node, ast.ImportFrom) or not node.level, f"{path}:{node.lineno}: relative import"
            continue
        for target in {resolve(n) for n in names if n.split(".")[0] in PACKAGES} - {None, module}:
            out.append((node, target, id(node) in in_function))
    return out


GRAPH = {m: imports(m) for m in MODULES}


def test_each_floor_imports_only_the_floors_below_it():
    upward = [f"{MODULES[m]}:{node.lineno}: {m} -> {target}" for m, edges in GRAPH.items()
              for node, target, _ in edges if target.split(".")[0] not in MAY_IMPORT[m.split(".")[0]]]
    assert upward == []


def test_no_import_cycle():
    edges = {m: {t for _, t, _ in e} for m, e in GRAPH.items()}
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                cycles.append(path[path.index(t):] + [t])
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_an_import_inside_a_function_says_why():
    unexplained = []
    for m, edges in GRAPH.items():
        lines = MODULES[m].read_text().splitlines()
        for node, target, inside in edges:
            if inside and "#" not in lines[node.end_lineno - 1]:
                unexplained.append(f"{MODULES[m]}:{node.lineno}: {target}")
    assert unexplained == []


def test_round_py_is_a_leaf_script():
    importers = [m for m, edges in GRAPH.items() for _, t, _ in edges if t == "posttrain.round"]
    assert importers == []
    assert [t for _, t, _ in GRAPH["posttrain.round"]] == ["posttrain.cli"]


def test_the_graph_sees_imports():
    """The checks above hold because the graph is right, not because it is empty: known edges are found."""
    edges = {(m, t, inside) for m, e in GRAPH.items() for _, t, inside in e}
    assert ("posttrain.pipeline", "posttrain.stages.generate", False) in edges
    assert ("eval.benchmarks.bfcl", "reward.tools", False) in edges
    assert ("posttrain.cli", "posttrain.commands", True) in edges
    assert len(edges) > 200
