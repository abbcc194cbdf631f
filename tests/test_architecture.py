"""Which layer may import which (docs/architecture.md): read from the source's import statements, so a change
that crosses a boundary fails here rather than in review."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src" / "keyless"

# Layer -> the keyless layers it may import. A layer is a package under keyless/ or a top-level module.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "clock": {"errors"},
    "private_files": set(),
    "datadir": set(),
    "domain": {"errors"},
    "storage": {"errors"},
    "crypto": {"errors", "private_files"},
    "proxy": set(),
    "console": set(),  # package data only: the console's files, served by keyless.http.console
    "service": {"domain", "errors", "clock", "crypto", "storage", "private_files"},
    "http": {"service", "domain", "errors", "clock", "crypto", "storage", "proxy"},
    "grpc": {"service", "domain", "errors", "clock", "crypto", "storage"},
    "metadata": {"http", "service", "domain", "errors", "clock", "crypto", "storage"},
    "server": {"http", "grpc", "metadata", "proxy", "service", "domain", "errors", "clock", "crypto", "storage",
               "private_files", "datadir", "cli"},
    "cli": {"server", "service", "domain", "errors", "crypto", "private_files", "datadir"},
    "pytest_plugin": {"cli", "private_files", "datadir"},
    "__main__": {"cli"},
    "__init__": set(),
}
# Libraries a layer must not import: the pure domain does no I/O, the core does not speak HTTP or SQL itself.
FORBIDDEN_LIBRARIES: dict[str, set[str]] = {
    "domain": {"starlette", "uvicorn", "httpx", "requests", "sqlite3", "asyncpg", "asyncio", "socket", "os"},
    "service": {"starlette", "uvicorn", "httpx", "requests", "sqlite3", "asyncpg"},
    "storage": {"starlette", "uvicorn", "httpx", "requests"},
    "crypto": {"starlette", "uvicorn", "sqlite3", "asyncpg"},
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports() -> Iterator[tuple[Path, str, str]]:
    """(file, its layer, the module it imports) for every import statement under src/keyless."""
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        layer = _layer(".".join(rel.parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, layer, alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, layer, node.module


def test_every_layer_is_in_the_table() -> None:
    layers = {_layer(".".join(p.relative_to(ROOT.parent).with_suffix("").parts)) for p in ROOT.rglob("*.py")}
    assert layers <= set(ALLOWED), layers - set(ALLOWED)


def test_layers_import_only_what_they_may() -> None:
    crossings = []
    for path, layer, module in _imports():
        if module.startswith("keyless."):
            target = _layer(module)
            if target != layer and target not in ALLOWED[layer]:
                crossings.append(f"{path.relative_to(ROOT.parent)}: {layer} imports {module}")
        elif module.split(".")[0] in FORBIDDEN_LIBRARIES.get(layer, set()):
            crossings.append(f"{path.relative_to(ROOT.parent)}: {layer} imports the library {module}")
    assert not crossings, "\n".join(crossings)
