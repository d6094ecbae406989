"""The suite passes whatever the checkout holds (issue 32, case 11): `make test` after `make data`
or `make reproduce` failed, since a test read the checkout's data/ instead of setting up its own.

Here the tests that once read the checkout run in a copy of it that holds what `make reproduce`
leaves: every default data set built, runs, results, figures and REPORT.md. The whole suite runs so
in CI (.ci/run: its second pass comes after `make data`)."""
import shutil
import subprocess
import sys

import pytest

from core.config import DATASETS, DEFAULT, ROOT
from data_prep.build import build_dataset
from tests.helpers import clean_env, random_slices

pytestmark = pytest.mark.slow

# Each read data/, results/ or models/long/ of the checkout (found by an audit of every file the
# suite opened, listed or looked at with data/ built).
ONCE_READ_THE_CHECKOUT = (
    "tests/test_eval_cli.py::test_figures_skip_a_reference_whose_data_set_is_not_built",
    "tests/test_eval_cli.py::test_corrupt_caffemodel_is_one_clear_line",
    "tests/test_results.py::test_eval_refuses_mixed_or_contradicted_scales_in_one_line",
    "tests/test_data_prep.py::test_unknown_override_is_one_clear_line",
    "tests/test_report.py::test_curves_from_seed_directories_and_the_long_schedule",
    "tests/test_run_integrity.py::test_a_copied_run_is_scored_as_itself",
)
# What the copy leaves out: the checkout's own state and caches (what is committed is copied).
LEFT_OUT = {".git", ".venv", "data", "runs", "results", "figures", "logs", ".slurm", "bench",
            "__pycache__", ".pytest_cache", "REPORT.md"}


def reproduced_checkout(dest):
    """A copy of the working tree as `make reproduce` leaves it, in miniature."""
    shutil.copytree(ROOT, dest, symlinks=True, ignore=lambda _, names: [n for n in names if n in LEFT_OUT])
    (dest / ".venv").symlink_to(ROOT / ".venv")
    for dataset in DATASETS:
        build_dataset(dest / "data" / dataset, random_slices(3), random_slices(2, seed=7), DEFAULT,
                      {"sources": []})
        run = dest / "runs" / dataset / "rrelu_nesterov" / "seed0"
        run.mkdir(parents=True)
        (run / "manifest.json").write_text('{"status": "done"}')
        (dest / "results").mkdir(exist_ok=True)
        (dest / "results" / f"{dataset}.json").write_text("{}")
        (dest / "figures").mkdir(exist_ok=True)
        (dest / "figures" / f"{dataset}_fig6.png").write_bytes(b"png")
    (dest / "REPORT.md").write_text("# Report\n")
    return dest


def test_the_tests_that_read_the_checkout_pass_in_one_that_was_reproduced(tmp_path):
    repo = reproduced_checkout(tmp_path / "medsr")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *ONCE_READ_THE_CHECKOUT], cwd=repo, env=clean_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
