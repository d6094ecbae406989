"""`make curves` / `python -m tools.curves`: the paper's Figs. 3 and 4 from run manifests.

Per data set: Fig. 3 compares ReLU with RReLU (one panel per solver), Fig. 4 SGD with Nesterov (one
panel per activation); test PSNR against iterations, with the bicubic PSNR as a horizontal line.
"""
import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt  # noqa: E402

from core.atomic import atomic_path  # noqa: E402
from core.config import ROOT  # noqa: E402
from core.run_files import read_manifest  # noqa: E402

FIGURES = {"fig3": ("act", "solver", "ReLU vs RReLU"), "fig4": ("solver", "act", "SGD vs Nesterov")}
STYLE = {"relu": "-", "rrelu": "-", "leaky": "--", "prelu": "-.", "sgd": "-", "nesterov": "-"}


def load_runs(runs_root, dataset):
    """Manifests of a data set's runs that have at least one test point."""
    runs = []
    for path in sorted((Path(runs_root) / dataset).glob("*/manifest.json")):
        manifest = read_manifest(path.parent)
        if manifest and manifest.get("tests"):
            runs.append(manifest)
    return runs


def plot_panel(ax, runs, compare, title):
    """One panel: PSNR curves of ``runs`` labelled by the ``compare`` field, bicubic as a line."""
    for run in runs:
        iters = [t["iter"] for t in run["tests"]]
        ax.plot(iters, [t["psnr"] for t in run["tests"]], STYLE.get(run[compare], "-"),
                marker="o", markersize=3, label=run[compare])
    if runs and runs[0].get("bicubic"):
        ax.axhline(runs[0]["bicubic"]["psnr"], color="grey", linestyle=":", label="bicubic")
    ax.set(title=title, xlabel="iterations", ylabel="average test PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend()


def plot_figure(runs, dataset, figure, out_dir):
    """Write ``<out_dir>/<dataset>_<figure>.png``; returns its path, or None with no runs."""
    compare, group, title = FIGURES[figure]
    groups = sorted({r[group] for r in runs})
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, key in zip(axes[0], groups):
        plot_panel(ax, [r for r in runs if r[group] == key], compare, f"{dataset}: {title} ({key})")
    fig.tight_layout()
    path = Path(out_dir) / f"{dataset}_{figure}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.curves", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=ROOT / "runs", help="runs root (default runs/)")
    p.add_argument("--out", type=Path, default=ROOT / "figures", help="output folder")
    p.add_argument("--dataset", action="append", help="data sets (default: every one with runs)")
    args = p.parse_args(argv)
    datasets = args.dataset or sorted(d.name for d in args.runs.glob("*") if d.is_dir())
    written = []
    for dataset in datasets:
        runs = load_runs(args.runs, dataset)
        written += [plot_figure(runs, dataset, fig, args.out) for fig in FIGURES]
    written = [w for w in written if w]
    if not written:
        print(f"curves: no run with test points under {args.runs}: train first (make grid)",
              file=sys.stderr)
        return 2
    for path in written:
        print(f"curves: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
