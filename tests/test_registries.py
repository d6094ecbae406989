"""One list per concept: everything that needs a list reads it from its one home."""
import re
import subprocess
import sys

import pytest

from core.activations import ACTIVATIONS as ACTIVATION_REGISTRY
from core.config import ACTIVATIONS, DATASETS, ROOT, SOLVERS
from core.datasets import DEFAULTS
from core.errors import DataError
from core.names import GRIDS, grid_runs
from data_prep.sources import loader


def names(*args):
    return subprocess.run([sys.executable, "-m", "core.names", *args], cwd=ROOT,
                          capture_output=True, text=True)


def test_lists_come_from_their_registries():
    """What the Makefile reads (python -m core.names) is the registries' own order and content."""
    assert names("datasets").stdout.split() == list(DEFAULTS)
    assert names("activations").stdout.split() == list(ACTIVATION_REGISTRY)
    assert names("solvers").stdout.split() == list(SOLVERS)


def test_every_default_data_set_has_a_loader():
    assert all(callable(loader(name)) for name in DATASETS)
    with pytest.raises(DataError, match="no loader"):
        loader("liver")
    with pytest.raises(DataError, match="no loader"):
        loader("split_central")  # a function of the module, but not a data set


def test_grid_runs_cover_every_pair_and_seed():
    runs = grid_runs("full", ("prostate",), seeds=2)
    assert len(runs) == len(GRIDS["full"]) * 2 == len(set(runs))
    bad = names("grid", "paper", "1", "prostate liver")
    assert bad.returncode == 2 and "unknown data set 'liver'" in bad.stderr


def literal_lists(text, names):
    """Runs of two or more of ``names`` written one after the other, separated by spaces, commas,
    "and" or "or", in any order."""
    one = r"\b(?:" + "|".join(map(re.escape, names)) + r")\b"
    return re.findall(one + r"(?:(?:\s*,\s*|\s+(?:and|or)\s+|\s+)" + one + ")+", text)


def test_a_literal_list_is_found_however_it_is_written():
    text = "(brain, prostate, breast) | prostate brain | relu or leaky | breast-relu"
    assert literal_lists(text, DATASETS) == ["brain, prostate, breast", "prostate brain"]
    assert literal_lists(text, ACTIVATIONS) == ["relu or leaky"]


@pytest.mark.parametrize("path", [
    "Makefile",
    "inference/upscale.py",
])
def test_no_list_is_repeated_outside_its_registry(path):
    """The Makefile asks core.names, the CLIs core.config; a literal list would drift."""
    text = (ROOT / path).read_text()
    for concept in (DATASETS, ACTIVATIONS, tuple(SOLVERS)):
        assert not literal_lists(text, concept), (path, literal_lists(text, concept))
