"""`python -m core.names LIST`: the project's lists, printed for the Makefile (one source each).

    python -m core.names datasets        brain prostate breast
    python -m core.names grid paper      dataset-act-solver-seed run names of a grid (paper, full)
"""
import sys

from core.config import ACTIVATIONS, DATASETS, SOLVERS, ConfigError

# (activation, solver): the paper's net, and its baseline (the SRCNN release's ReLU and SGD)
PAPER_NET = ("rrelu", "nesterov")
BASELINE = ("relu", "sgd")


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
    "full": tuple((act, solver) for act in ("relu", "rrelu") for solver in SOLVERS),
}
LISTS = {"datasets": DATASETS, "activations": ACTIVATIONS, "solvers": tuple(SOLVERS),
         "grids": tuple(GRIDS)}


def grid_runs(grid, datasets=DATASETS, seeds=1):
    """``dataset-act-solver-seed`` names of every run of ``grid`` (ConfigError for a bad name)."""
    if grid not in GRIDS:
        raise ConfigError(f"unknown grid {grid!r}; choose from {', '.join(GRIDS)}")
    for name in datasets:
        if name not in DATASETS:
            raise ConfigError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    if seeds < 1:
        raise ConfigError(f"SEEDS must be at least 1, got {seeds}")
    return [f"{d}-{a}-{s}-{k}" for d in datasets for a, s in GRIDS[grid] for k in range(seeds)]


def parse_run(name):
    """(dataset, act, solver, seed) of a grid run's name (``grid_runs``); ConfigError otherwise."""
    parts = name.split("-")
    if len(parts) != 4 or not parts[3].isdigit():
        raise ConfigError(f"run name {name!r} is not dataset-act-solver-seed")
    return parts[0], parts[1], parts[2], int(parts[3])


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["grid"] and len(args) in (2, 3, 4):
            seeds = int(args[2]) if len(args) > 2 else 1
            datasets = args[3].split() if len(args) > 3 else DATASETS
            print(" ".join(grid_runs(args[1], datasets, seeds)))
        elif len(args) == 1 and args[0] in LISTS:
            print(" ".join(LISTS[args[0]]))
        else:
            raise ConfigError(f"usage: python -m core.names {{{','.join(LISTS)}}} | "
                              "grid GRID [SEEDS] [DATASETS]")
    except (ConfigError, ValueError) as e:
        print(f"names: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
