"""Imports point one way: experiments -> callbacks -> lightning_modules -> networks, with no cycle.

``common`` (atomic writes, frozen extractors, worker processes) imports nothing else of ours, and
every package may import it. The data layer (``datamodules``) and the metrics import nothing of the
model; the networks and the metrics read the data layer only through ``datamodules.conventions``,
which imports nothing of ours; importing the networks does not load Lightning. The graph is read
from the source (every import statement, including those inside functions), so a rule holds
whichever code path runs.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES: tuple[str, ...] = ("common", "datamodules", "metrics", "lightning_modules", "callbacks", "experiments")
CONSTANTS = "datamodules.conventions"
SHARED = "common"
"""Helpers every package may import; they import nothing of ours outside their own package."""
LAYERS: tuple[str, ...] = ("lightning_modules.networks", "lightning_modules", "callbacks", "experiments")
"""Model-side layers, lowest first: a module may import its own layer or lower ones only."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(f): f for pkg in PACKAGES for f in sorted((ROOT / pkg).rglob("*.py"))}


def _imported(path: Path, name: str) -> set[str]:
    """Our modules that the file at ``path`` (module ``name``) imports anywhere in its body."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this module's package
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if m in _modules() and m != name}


@cache
def _graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(_imported(path, name)) for name, path in _modules().items()}


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _layer(module: str) -> int | None:
    for rank, layer in enumerate(LAYERS):
        if _in(module, layer):
            return rank
    return None


def _edges(source: str) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in _graph().items() if _in(a, source) for b in targets)


def _cycles(package: str) -> list[list[str]]:
    """Strongly connected components (more than one module) of ``package``'s modules (Tarjan)."""
    graph = {m: [t for t in targets if _in(t, package)] for m, targets in _graph().items() if _in(m, package)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = [stack.pop()]
            while component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_known_imports() -> None:
    """The reader finds imports (absolute, from-, inside functions): the rules below are not vacuous."""
    assert "lightning_modules.checkpoint" in _graph()["experiments.fit"]  # from a.b import c
    assert "datamodules.face" in _graph()["experiments.generate"]  # from a import b as c
    assert "lightning_modules.nfy_module" in _graph()["lightning_modules"]  # inside a function
    assert "lightning_modules.networks.nfy" in _graph()["lightning_modules.networks.presets"]
    assert CONSTANTS in _graph()["lightning_modules.networks.layers"]
    assert "common.frozen" in _graph()["metrics.frechet"]
    assert "common.frozen" in _graph()["lightning_modules.networks.encoders"]  # networks may import common


def test_model_side_imports_point_one_way() -> None:
    upward = [(a, b) for a, targets in _graph().items() for b in targets
              if _layer(a) is not None and _layer(b) is not None and _layer(b) > _layer(a)]
    assert upward == [], f"imports against experiments -> callbacks -> lightning_modules -> networks: {upward}"


def test_networks_read_the_data_layer_only_through_the_conventions() -> None:
    bad = [(a, b) for a, b in _edges("lightning_modules.networks")
           if not _in(b, "lightning_modules.networks") and b != CONSTANTS and not _in(b, SHARED)]
    assert bad == []


def test_the_conventions_import_nothing_of_ours() -> None:
    assert _graph()[CONSTANTS] == frozenset()


def test_common_imports_nothing_of_ours() -> None:
    assert [(a, b) for a, b in _edges(SHARED) if not _in(b, SHARED)] == []


@pytest.mark.parametrize("package", ["datamodules", "metrics"])
def test_data_and_metrics_import_nothing_of_the_model(package: str) -> None:
    bad = [(a, b) for a, b in _edges(package) if _in(b, "lightning_modules") or _in(b, "callbacks")
           or _in(b, "experiments")]
    assert bad == []


def test_metrics_read_the_data_layer_only_through_the_conventions() -> None:
    bad = [(a, b) for a, b in _edges("metrics") if _in(b, "datamodules") and b != CONSTANTS]
    assert bad == []


def test_the_generic_data_modules_do_not_import_the_demo_or_each_other() -> None:
    """The generic readers stand alone: the demo builds on them, and streaming on the samples."""
    graph = _graph()
    assert "datamodules.streaming" not in graph["datamodules.samples"]
    assert "datamodules.clip_dataset" not in graph["datamodules.streaming"]
    assert "datamodules.demo" not in graph["datamodules.clip_dataset"]


@pytest.mark.parametrize("package", ["common", "lightning_modules", "callbacks", "experiments", "datamodules",
                                     "metrics"])
def test_no_import_cycle(package: str) -> None:
    assert _cycles(package) == []


def test_no_import_cycle_between_packages() -> None:
    packages = {(a.split(".")[0], b.split(".")[0]) for a, targets in _graph().items() for b in targets}
    both_ways = sorted((a, b) for a, b in packages if a < b and (b, a) in packages)
    assert both_ways == []


def test_cycle_finder_finds_a_cycle(monkeypatch) -> None:
    fake = {"x.a": frozenset({"x.b"}), "x.b": frozenset({"x.c"}), "x.c": frozenset({"x.a"}), "x.d": frozenset()}
    monkeypatch.setattr(sys.modules[__name__], "_graph", lambda: fake)
    assert _cycles("x") == [["x.a", "x.b", "x.c"]]


@pytest.mark.parametrize("package", ["lightning_modules.networks", "metrics", "common"])
def test_networks_metrics_and_common_import_no_lightning(package: str) -> None:
    lightning = []
    for name, path in _modules().items():
        if _in(name, package):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                lightning += [(name, n) for n in names if n.split(".")[0] in ("lightning", "pytorch_lightning")]
    assert lightning == []


def test_importing_the_networks_does_not_load_lightning() -> None:
    code = ("import sys, lightning_modules.networks, lightning_modules.pipeline\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning'))\n"
            "assert not loaded, loaded\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    # and prints nothing: no third-party warning about parts nfy does not use (bitsandbytes' 4-bit kernels)
    assert run.stderr == "", run.stderr[-2000:]
