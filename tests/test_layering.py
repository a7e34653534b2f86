"""Import direction of the data and metric layers, read from the source (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement of ``path`` (also those inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _ours(package: str) -> dict[str, set[str]]:
    """``{file: nfy modules it imports}`` for every file of ``package``."""
    top = {"common", "datamodules", "metrics", "lightning_modules", "callbacks", "experiments"}
    return {str(path.relative_to(REPO)): {n for n in _imports(path) if n.split(".")[0] in top}
            for path in sorted((REPO / package).rglob("*.py"))}


@pytest.mark.parametrize("package,allowed", [
    ("common", set()),
    ("metrics", {"common", "metrics", "datamodules.conventions"}),
    ("datamodules", {"common", "metrics", "datamodules"}),
])
def test_packages_import_only_what_their_layer_allows(package: str, allowed: set[str]) -> None:
    wrong = {f: sorted(n for n in names if n not in allowed and n.split(".")[0] not in allowed)
             for f, names in _ours(package).items()}
    assert not {f: n for f, n in wrong.items() if n}


def test_the_generic_modules_do_not_import_the_demo_or_each_other() -> None:
    imports = _ours("datamodules")
    assert "datamodules.streaming" not in imports["datamodules/samples.py"]
    assert "datamodules.clip_dataset" not in imports["datamodules/streaming.py"]
    assert "datamodules.demo" not in imports["datamodules/clip_dataset.py"]
