"""`python -m core.names LIST`: the project's lists, printed for the Makefile (one source each).

    python -m core.names datasets        brain prostate breast
    python -m core.names grid paper      dataset-act-solver-seed run names of a grid (paper, full)
    python -m core.names grid paper 1 "prostate" "sgd adam"   the paper's activations with these solvers
    python -m core.names grid paper 1 "prostate" "" "a.prototxt"   and with these solver files too
"""
import re
import sys
from pathlib import Path

from core.config import ACTIVATIONS, DATASETS, SOLVERS, ConfigError

# (activation, solver): the paper's net, and its baseline (the SRCNN release's ReLU and SGD)
PAPER_NET = ("rrelu", "nesterov")
BASELINE = ("relu", "sgd")
PAPER_SOLVERS = (BASELINE[1], PAPER_NET[1])  # the two the paper compares


def variant(act, solver):
    """How a variant is named in run folders, tables and plots: ``<act>_<solver>``."""
    return f"{act}_{solver}"


def manifest_variant(manifest):
    """The variant name of a run's manifest."""
    return variant(manifest["act"], manifest["solver"])


# The grids `make grid` / `make reproduce` train, as (activation, solver) pairs. "paper": the paper's
# net and its baseline; "full": Figs. 3-4's 2 x 2 comparison.
GRIDS = {
    "paper": (PAPER_NET, BASELINE),
    "full": tuple((act, solver) for act in ("relu", "rrelu") for solver in PAPER_SOLVERS),
}
LISTS = {"datasets": DATASETS, "activations": ACTIVATIONS, "solvers": tuple(SOLVERS),
         "grids": tuple(GRIDS)}


def solver_file_names(paths):
    """The solver names of solver files (make grid SOLVER_FILES=): their stems, which name the
    variants ``<act>_<stem>`` and the grid's runs ``dataset-act-stem-seed``; ConfigError, one
    line, for a stem a run name cannot carry, a built-in solver's name, or two files of one stem."""
    names = []
    for path in map(Path, paths):
        stem = path.stem
        if "-" in stem or not stem:
            raise ConfigError(f"{path}: a grid's run names are dataset-act-solver-seed: rename "
                              f"the solver file without '-' (the variant is named after it)")
        if not re.fullmatch(r"[A-Za-z0-9_.]+", stem):
            raise ConfigError(f"{path}: make takes a grid's run names as targets: name the solver "
                              "file with letters, digits, '_' and '.' only")
        if stem in SOLVERS:
            raise ConfigError(f"{path}: named like the built-in solver {stem!r}: rename it")
        if stem in names:
            raise ConfigError(f"two solver files are named {stem!r}: the variant is named after "
                              "the file, so each needs its own name")
        names.append(stem)
    return names


def grid_variants(grid, solvers=(), solver_files=()):
    """(act, solver) pairs of ``grid``; with ``solvers``, each of them with the paper's two
    activations instead (make grid SOLVERS="sgd nesterov adam"); ``solver_files`` add each file
    (named by its stem) with the paper's two activations to either."""
    if grid not in GRIDS:
        raise ConfigError(f"unknown grid {grid!r}; choose from {', '.join(GRIDS)}")
    unknown = [s for s in solvers if s not in SOLVERS]
    if unknown:
        raise ConfigError(f"unknown solver {unknown[0]!r}; choose from {', '.join(SOLVERS)}")
    pairs = GRIDS[grid] if not solvers else tuple(
        (act, solver) for act in (PAPER_NET[0], BASELINE[0]) for solver in solvers)
    files = solver_file_names(solver_files)
    return pairs + tuple((act, name) for name in files for act in (PAPER_NET[0], BASELINE[0]))


def grid_runs(grid, datasets=DATASETS, seeds=1, solvers=(), solver_files=()):
    """``dataset-act-solver-seed`` names of every run of ``grid`` (ConfigError for a bad name)."""
    variants = grid_variants(grid, solvers, solver_files)
    for name in datasets:
        if name not in DATASETS:
            raise ConfigError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    if seeds < 1:
        raise ConfigError(f"SEEDS must be at least 1, got {seeds}")
    return [f"{d}-{a}-{s}-{k}" for d in datasets for a, s in variants for k in range(seeds)]


def parse_run(name):
    """(dataset, act, solver, seed) of a grid run's name (``grid_runs``); ConfigError otherwise."""
    parts = name.split("-")
    if len(parts) != 4 or not parts[3].isdigit():
        raise ConfigError(f"run name {name!r} is not dataset-act-solver-seed")
    return parts[0], parts[1], parts[2], int(parts[3])


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["grid"] and len(args) in (2, 3, 4, 5, 6):
            seeds = int(args[2]) if len(args) > 2 else 1
            datasets = (args[3].split() if len(args) > 3 else []) or DATASETS
            solvers = args[4].split() if len(args) > 4 else ()
            files = args[5].split() if len(args) > 5 else ()
            print(" ".join(grid_runs(args[1], datasets, seeds, solvers, files)))
        elif len(args) == 1 and args[0] in LISTS:
            print(" ".join(LISTS[args[0]]))
        else:
            raise ConfigError(f"usage: python -m core.names {{{','.join(LISTS)}}} | "
                              "grid GRID [SEEDS] [DATASETS] [SOLVERS] [SOLVER_FILES]")
    except (ConfigError, ValueError) as e:
        print(f"names: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
