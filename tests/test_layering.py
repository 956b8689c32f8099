"""The layering of flowcli/ (CONTRIBUTING.md): a module imports only from its own tier or the tiers
below it, and no two modules import each other, directly or through others. Imports inside functions
count too: a lazy import back up the stack is still a cycle, only a hidden one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "flowcli"

# Top to bottom. Every module of flowcli/ must be placed here, so a new module gets a place on purpose.
TIERS: list[tuple[str, set[str]]] = [
    ("cli", {"flowcli", "flowcli.cli", "flowcli.__main__", "flowcli.given"}),
    ("fitting and reading a model", {"flowcli.fitting", "flowcli.report", "flowcli.describe", "flowcli.plots", "flowcli.compare"}),
    ("training", {"flowcli.train", "flowcli.accel", "flowcli.averaging", "flowcli.health"}),
    ("data sources", {"flowcli.datasource", "flowcli.distributed", "flowcli.moments", "flowcli.io", "flowcli.delimited",
                      "flowcli.outputs", "flowcli.redundancy"}),
    ("model", {"flowcli.model", "flowcli.trainstate", "flowcli.checkpoint", "flowcli.config", "flowcli.conditional",
               "flowcli.questions", "flowcli.joint_given"}),
    ("schema", {"flowcli.schema"}),
    ("columns", {"flowcli.columns", "flowcli.roles"}),
    ("foundation", {"flowcli.errors", "flowcli.files", "flowcli.devices", "flowcli.progress", "flowcli.registry",
                    "flowcli.quantiles", "flowcli.formats", "flowcli.bases", "flowcli.layers",
                    "flowcli.discrete"}),
]  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The flowcli modules ``path`` imports, at module level or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None:  # `from . import x`: x is a module
                found.update(f"{target}.{alias.name}" for alias in node.names)
            else:
                found.add(target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    # `from .layers.base import X` is an import of flowcli.layers.base; keep names that are modules.
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def tier_of(module: str) -> int:
    """Index in TIERS (0 is the top); a subpackage's modules share its tier."""
    for index, (_, members) in enumerate(TIERS):
        if any(module == m or module.startswith(m + ".") for m in members if m != "flowcli"):
            return index
        if module == "flowcli" and "flowcli" in members:
            return index
    raise KeyError(module)


def test_every_module_has_a_tier() -> None:
    unplaced = []
    for module in graph():
        try:
            tier_of(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, f"place these modules in TIERS of tests/test_layering.py and CONTRIBUTING.md: {unplaced}"


def test_modules_import_only_from_their_tier_or_below() -> None:
    upward = [
        f"{module} ({TIERS[tier_of(module)][0]}) imports {target} ({TIERS[tier_of(target)][0]})"
        for module, targets in graph().items()
        for target in sorted(targets)
        if tier_of(target) < tier_of(module)
    ]
    assert not upward, "\n".join(upward)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    # A package's __init__ importing its own modules is how a registry fills itself, not a cycle
    # between layers: leave those edges out.
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph().items()}
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize(
    "edges, expected",
    [({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]), ({"a": {"b"}, "b": set(), "c": {"a"}}, None)],
)
def test_the_cycle_finder_finds_cycles(edges: dict[str, set[str]], expected: list[str] | None) -> None:
    assert find_cycle(edges) == expected
