"""The architecture, checked: the import-linter contracts in pyproject.toml (layers; no asyncio or sockets in
the sans-IO code) and no import cycle anywhere in src/livesrv (type-checking imports included)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.fail("lint-imports is missing: run scripts/test, which installs the test extras")
    proc = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout, proc.stdout


def _cycle(graph: grimp.ImportGraph) -> list[str] | None:
    """One import cycle among the package's modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for nxt in sorted(graph.find_modules_directly_imported_by(module)):
            if not nxt.startswith("livesrv"):
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph.modules):
        if module.startswith("livesrv") and module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("livesrv", cache_dir=None)
    # A package imports its own submodules through __init__ only for re-exports: not a cycle of behaviour.
    for module in list(graph.modules):
        for child in graph.find_children(module):
            if graph.direct_import_exists(importer=module, imported=child):
                graph.remove_import(importer=module, imported=child)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_a_cycle_is_found() -> None:
    """The checker itself: a graph with a cycle is reported (so the test above can fail)."""
    graph = grimp.ImportGraph()
    for name in ("livesrv.a", "livesrv.b", "livesrv.c"):
        graph.add_module(name)
    graph.add_import(importer="livesrv.a", imported="livesrv.b")
    graph.add_import(importer="livesrv.b", imported="livesrv.c")
    assert _cycle(graph) is None
    graph.add_import(importer="livesrv.c", imported="livesrv.a")
    assert _cycle(graph) == ["livesrv.a", "livesrv.b", "livesrv.c", "livesrv.a"]


def test_optional_stacks_are_imported_only_when_configured() -> None:
    """WebRTC's stack (aiortc, aioice, PyAV) and redis-py are ~70 MiB of a process's memory: a server with
    WebRTC off and no Redis registry (the embedded defaults) never imports them, every worker of a host neither."""
    code = (
        "import sys\n"
        "from livesrv.app import App\n"
        "from livesrv.config import load_config\n"
        "App(load_config(None).config)\n"
        "print(sorted(m for m in ('aiortc', 'aioice', 'av', 'redis') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
