"""The packages import in one direction: core <- data_prep <- inference <- eval <- tools
(docs/layout.md): inference (nets, tiles, engines, upscale, export, the through-plane pass) stands
below evaluation, which scores what it infers."""
import ast

import pytest

from core.config import ROOT

# What each package may import from the project (itself included); tools (scripts) may import all.
ALLOWED = {
    "core": {"core"},
    "data_prep": {"core", "data_prep"},
    "inference": {"core", "data_prep", "inference"},
    "eval": {"core", "data_prep", "inference", "eval"},
    "tools": {"core", "data_prep", "inference", "eval", "tools"},
}
PROJECT = set(ALLOWED) | {"tests"}


def project_imports(path, package):
    """(line, imported top-level project package) for every import in ``path``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [package] if node.level else [node.module or ""]
        else:
            continue
        found += [(node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in PROJECT]
    return found


def wrong_way(package):
    """'file:line imports X' for every import of ``package`` that goes against the layering."""
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, target in project_imports(path, package):
            if target not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    return bad


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_go_one_way(package):
    assert wrong_way(package) == []


def test_every_package_has_a_layer_and_a_row():
    """A new top-level package is given its place here and in docs/layout.md, not left unchecked:
    every folder of ours with an __init__.py (tests/ may import all)."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages == PROJECT
    layout = (ROOT / "docs" / "layout.md").read_text()
    assert [p for p in sorted(packages) if f"| `{p}/` |" not in layout] == []


def test_inference_has_no_namesake_left_in_eval():
    """One home per module, one entry point per verb: ``python -m inference.upscale``, with no
    ``eval.upscale`` beside it."""
    moved = {p.name for p in (ROOT / "inference").glob("*.py")} - {"__init__.py"}
    assert {"upscale.py", "export.py", "net.py", "tiles.py"} <= moved
    assert moved & {p.name for p in (ROOT / "eval").glob("*.py")} == set()


def test_the_check_sees_a_wrong_import(tmp_path):
    """The checker itself: an upward import in a core-like file is reported, at any depth."""
    bad = tmp_path / "mod.py"
    bad.write_text("import os\n\ndef f():\n    from eval.score import score_method\n")
    assert project_imports(bad, "core") == [(4, "eval")]
    rel = tmp_path / "rel.py"
    rel.write_text("from .matlab import imresize\n")
    assert project_imports(rel, "data_prep") == [(1, "data_prep")]
