"""The package's imports run down the layers of docs/design.md, and no module imports itself
back through others.

A static check (``ast`` over ``src/gandiv/**/*.py``): every import counts, also those inside
functions (lazy imports) and under ``TYPE_CHECKING``, since a circle or an upward arrow there is
one all the same. ``LAYERS`` is the table that docs/design.md mirrors.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "gandiv"

# Top to bottom: a module may import from its own room or from any room in a later row; rooms in
# the same row do not import each other. A room is a top-level module or subpackage of gandiv.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__",),  # python -m gandiv
    ("cli",),  # the `gandiv` command: dispatch, one line per user error
    ("run_dirs",),  # which run directory a command works in (claims, resume=, run=, torchrun)
    ("commands",),  # one module per command: reads the config, calls the library
    ("build",),  # typed config → objects
    ("config",),  # Hydra's composed config → typed dataclasses (the config boundary)
    ("sweep",),  # a sweep's summary files
    ("training",),  # the loop, the run directory, figures, health, vectorised groups
    ("objectives",),  # losses
    ("evaluation",),  # ground truth, the ideal, independent critics, spread metrics and bound
    ("models",),  # generators and critics
    ("data",),  # datasets, spread kernels
    ("divergences", "plotting"),  # the f-divergence table; arrays in, figures out
    ("__init__", "conf", "errors"),  # the version; the YAML configs; the errors and exit codes
)
RANK = {room: rank for rank, rooms in enumerate(LAYERS) for room in rooms}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def room(module: str) -> str:
    """`gandiv.data.spread` → `data`; the package's own `__init__` (its version) → `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(module: str) -> set[str]:
    """The gandiv modules `module` imports (``from gandiv.x import y``: gandiv.x.y if a module)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level − 1 packages
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        found |= {n for n in names if n == "gandiv" or n.startswith("gandiv.")}
    return {n for n in found if n in MODULES}


GRAPH = {module: imports(module) for module in MODULES}


def test_every_room_has_a_layer():
    unknown = sorted({room(m) for m in MODULES} - set(RANK))
    assert not unknown, f"add these rooms to LAYERS (and docs/design.md): {unknown}"


def test_imports_run_down_the_layers():
    upward = [
        f"{module} imports {target} ({room(module)} → {room(target)})"
        for module, targets in GRAPH.items()
        for target in sorted(targets)
        if room(target) != room(module) and RANK[room(target)] <= RANK[room(module)]
    ]
    assert not upward, "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_module_imports_itself_through_others():
    cycle = find_cycle(GRAPH)
    assert cycle is None, " → ".join(cycle or [])


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": {"b"}}, ["b", "b"]),
    ],
)
def test_the_cycle_check_finds_a_circle(graph, cycle):
    assert find_cycle(graph) == cycle


def test_the_check_sees_lazy_and_type_checking_imports():
    assert "gandiv.commands.train" in GRAPH["gandiv.cli"]  # inside a function
    assert "gandiv.training.distributed" in GRAPH["gandiv.run_dirs"]  # also under TYPE_CHECKING
    # (data/spread.py's lazy import of data/manifold.py was the data room's circle)
    assert "gandiv.data.spread" in GRAPH["gandiv.data.manifold"]
