"""The package's layering: nothing low imports something high.

The rule, bottom to top:

* ``groups`` (point groups as 3x3 matrices) imports nothing else of the package;
* ``data`` (graphs, neighbor lists, readers, generators) knows no layer but ``groups``;
* ``graph`` (permutation symmetry on a fixed graph) imports nothing else of the package;
* ``nn`` (relaxed layers) and ``symmetry`` (measuring breaking) sit on ``groups`` and ``data``
  (``symmetry`` also reads ``nn``); ``discrete`` (point-group message passing) on ``groups`` and ``data``;
* ``models`` sit on ``nn`` and ``discrete``; ``train`` on ``models``, ``data`` and ``symmetry`` (it
  validates the learned breaking after training); ``cli`` on top.

The private top-level helpers (``_scatter``, ``_atomic``, ``_dtype``, ``_checks``, ``_settings``)
import nothing of the package's subpackages, so every layer may use them. ``ALLOWED`` below is this
rule as data. It is checked statically on every ``relaxed_e3nn`` import statement of every module,
including lazy imports inside functions, so a violation cannot hide behind an import that has not
run yet.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "relaxed_e3nn"

# subpackage -> the subpackages of ours it may import (private top-level helpers are always allowed)
ALLOWED = {
    "groups": set(),
    "data": {"groups"},
    "graph": set(),
    "nn": {"groups", "data"},
    "symmetry": {"groups", "nn", "data"},
    "discrete": {"groups", "data"},
    "models": {"groups", "nn", "data", "discrete"},
    "train": {"groups", "nn", "data", "models", "discrete", "symmetry"},
}
SHARED_HELPERS = {"_scatter", "_atomic", "_dtype", "_checks", "_settings"}


def _imported_subpackages(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.ImportFrom) and node.level == 2:
            names = ["relaxed_e3nn." + (node.module or "")]
        for name in names:
            parts = name.split(".")
            if parts[0] == "relaxed_e3nn" and len(parts) > 1:
                yield parts[1], node.lineno


@pytest.mark.parametrize("subpackage", sorted(ALLOWED))
def test_subpackage_imports_only_lower_layers(subpackage):
    allowed = ALLOWED[subpackage] | SHARED_HELPERS | {subpackage}
    violations = []
    for path in sorted((PACKAGE / subpackage).rglob("*.py")):
        for imported, line in _imported_subpackages(path):
            if imported not in allowed:
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports relaxed_e3nn.{imported}")
    assert not violations, "layering violations:\n" + "\n".join(violations)


def test_checker_detects_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from relaxed_e3nn.train import train\n")
    assert list(_imported_subpackages(bad)) == [("train", 2)]
