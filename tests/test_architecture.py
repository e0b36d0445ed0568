"""The house's rules, checked on the source (docs/architecture.md): each floor imports only the floors below it,
the workflows floor in its order, and no two modules import each other — not even behind a function-local import.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pdeconv"

#: floor → the top-level modules and packages on it (docs/architecture.md)
FLOORS = {
    0: {"errors", "stencil", "boundary", "autotune", "layers", "regularize", "normalization", "warp", "storage"},
    1: {"models"},
    2: {"data", "runtime", "distributed", "eta", "engine", "run", "analysis", "experiment", "discover"},
    3: {"cli", "demos", "probes", "doctor", "timm_script", "__main__"},
}
#: the workflows floor's order: each may import those before it (discover stands beside them)
WORKFLOWS = ["data", "runtime", "distributed", "eta", "engine", "run", "analysis", "experiment"]


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module → the pdeconv modules it imports anywhere in its file (module level or inside functions)."""

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {resolve(a.name) for a in node.names if a.name.startswith("pdeconv.")}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("pdeconv"):
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else resolve(node.module)
                          for a in node.names}
        edges[name] = {t for t in found if t and t != name and t != "pdeconv"}
    return edges


def _top(module: str) -> str:
    return module.split(".")[1]


def test_every_module_has_a_floor():
    tops = {_top(m) for m in _modules() if m != "pdeconv"}
    assert tops <= set().union(*FLOORS.values()), tops - set().union(*FLOORS.values())


def test_no_module_imports_a_higher_floor_or_a_later_workflow():
    floor = {top: f for f, tops in FLOORS.items() for top in tops}
    wrong = []
    for a, targets in _imports(_modules()).items():
        if a == "pdeconv":
            continue
        for b in targets:
            ta, tb = _top(a), _top(b)
            if ta == tb:
                continue
            if floor[tb] > floor[ta]:
                wrong.append(f"{a} (floor {floor[ta]}) imports {b} (floor {floor[tb]})")
            elif ta in WORKFLOWS and tb in WORKFLOWS and WORKFLOWS.index(tb) > WORKFLOWS.index(ta):
                wrong.append(f"{a} imports {b}, which comes after it on the workflows floor")
            elif tb == "discover" and floor[ta] == 2:
                wrong.append(f"{a} imports {b}: discover stands beside the workflows, none builds on it")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle_even_behind_a_function_local_import():
    edges = _imports(_modules())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    assert not circles, circles


def test_the_checker_sees_a_function_local_import():
    """A control: the import scan finds an import written inside a function, as the circle it once hid was."""
    edges = _imports(_modules())
    assert "pdeconv.data.locate" in edges["pdeconv.data.loaders"]
    source = (PACKAGE / "run.py").read_text()
    assert "    from pdeconv.models import" in source and "pdeconv.models" in edges["pdeconv.run"]
