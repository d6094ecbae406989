"""The trainer is split over tools/train.py (the command line) and tools/train_*.py (the run
directory's life, the loop, the progress bar and step timing). Many of its importers import
inside a function (tools/thickslice.py, tools/gpu_check.py), where a name that moved fails only
when that path runs: every such import in the project is checked here, at any depth."""
import ast
import importlib

from core.config import ROOT

PACKAGES = ("core", "data_prep", "inference", "eval", "tools", "tests")


def trainer_imports(path):
    """(line, module, name) for every ``from tools.train... import name`` in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module and (
                node.module == "tools.train" or node.module.startswith("tools.train_")):
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
    return found


def missing_names(paths):
    """'file:line: module has no name' for each trainer import in ``paths`` that would fail."""
    bad = []
    for path in paths:
        for line, module, name in trainer_imports(path):
            if not hasattr(importlib.import_module(module), name):
                where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
                bad.append(f"{where}:{line}: {module} has no {name}")
    return bad


def test_every_import_of_the_trainer_finds_its_name():
    paths = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    assert sum(len(trainer_imports(p)) for p in paths) >= 10  # the walk sees them
    assert missing_names(paths) == []


def test_the_check_sees_a_name_that_moved(tmp_path):
    """The checker itself: a name imported inside a function from the wrong module is reported."""
    bad = tmp_path / "mod.py"
    bad.write_text("def f():\n    from tools.train import main, data_period\n")
    assert trainer_imports(bad) == [(2, "tools.train", "main"), (2, "tools.train", "data_period")]
    assert missing_names([bad]) == ["mod.py:2: tools.train has no data_period"]
