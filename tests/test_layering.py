"""The import direction of docs/architecture.md stays true: api → services → engines, storage, limits, usage,
auth, cache; schemas below them all; no import circle among the services; no engine type in a route."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "portico"

# What each layer may import from inside portico (besides itself and the shared leaf modules below).
LEAVES = {"constants", "errors", "settings", "observability", "redis_client", "safety"}
ALLOWED: dict[str, set[str]] = {
    "schemas": set(),
    "storage": set(),
    "auth": {"limits", "storage"},
    "limits": {"auth"},
    "usage": {"auth", "limits", "storage"},
    "cache": set(),
    "engines": set(),
    "services": {"auth", "cache", "engines", "limits", "schemas", "storage", "usage"},
    "jobs": {"auth", "engines", "schemas", "services", "storage", "usage", "runtime"},
    "api": {"auth", "engines", "schemas", "services", "storage", "usage", "runtime", "jobs", "limits"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    """Every ``portico.*`` module ``path`` imports, at any depth (also inside functions and TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("portico."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("portico."):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                yield candidate if _exists(candidate) else node.module


def _exists(module: str) -> bool:
    relative = Path(*module.split("."))
    return (SRC / relative).with_suffix(".py").exists() or (SRC / relative / "__init__.py").exists()


def _graph() -> dict[str, set[str]]:
    return {_module_name(path): set(_imports(path)) for path in PACKAGE.rglob("*.py")}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_what_is_below_it(layer: str) -> None:
    allowed = ALLOWED[layer] | LEAVES | {layer}
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if _layer(module) == layer
        for target in targets
        if _layer(target) not in allowed
    )
    assert wrong == []


def test_no_import_circle_among_the_services() -> None:
    graph = {
        module: {target for target in targets if _layer(target) == "services"}
        for module, targets in _graph().items()
        if _layer(module) == "services"
    }
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


# Routes describe models (the registry, their versions) but never touch an engine: the pipeline does.
ROUTE_ENGINE_MODULES = {"portico.engines.registry", "portico.engines.versions"}


def test_routes_know_no_engine_types() -> None:
    engine_imports = sorted(
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if _layer(module) == "api"
        for target in targets
        if _layer(target) == "engines" and target not in ROUTE_ENGINE_MODULES
    )
    assert engine_imports == []
    for path in (PACKAGE / "api").glob("*.py"):
        assert "UpstreamEngine" not in path.read_text(), path.name
