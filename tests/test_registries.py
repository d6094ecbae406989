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
    assert DATASETS == tuple(DEFAULTS)
    assert ACTIVATIONS == tuple(ACTIVATION_REGISTRY)
    assert names("datasets").stdout.split() == list(DATASETS)
    assert names("activations").stdout.split() == list(ACTIVATIONS)
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


def test_the_makefile_repeats_no_list():
    """The Makefile asks core.names; a literal list of data sets or activations would drift."""
    text = (ROOT / "Makefile").read_text()
    for concept in (DATASETS, ACTIVATIONS, tuple(SOLVERS)):
        assert not re.search(r"\b" + r"\s+".join(concept[:2]) + r"\b", text), concept
