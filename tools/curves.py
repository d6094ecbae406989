"""`make curves` / `python -m tools.curves`: the paper's Figs. 3 and 4 from run manifests.

Per data set: Fig. 3 compares ReLU with RReLU (one panel per solver), Fig. 4 SGD with Nesterov (one
panel per activation): average test PSNR against iterations, each seed faint and the mean over
seeds bold, the bicubic PSNR as a horizontal line, and the iterations at which the paper sampled
its curves (core.paper) as vertical lines where they fall in the plotted range (else a note says
where). The long-schedule reference run (models/reference/<dataset>/) gets <dataset>_long.png.
"""
import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt  # noqa: E402

from core.activations import ACTIVATIONS  # noqa: E402
from core import paper  # noqa: E402
from core.atomic import atomic_path  # noqa: E402
from core.config import ROOT  # noqa: E402
from core.run_files import REFERENCE_ROOT, read_manifest  # noqa: E402
from eval.metrics import METRICS  # noqa: E402
from eval.report_tables import sci  # noqa: E402
from eval.results import run_dirs_under  # noqa: E402

FIGURES = {"fig3": ("act", "solver", "ReLU vs RReLU"), "fig4": ("solver", "act", "SGD vs Nesterov")}
COLOURS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def load_runs(runs_root, dataset):
    """Manifests of a data set's runs (every seed, either layout) that have a test point."""
    runs = [read_manifest(d) for d in run_dirs_under(Path(runs_root) / dataset)]
    return [m for m in runs if m and m.get("tests")]


def load_reference(reference_root, dataset):
    """The long-schedule reference run's manifest, or None."""
    manifest = read_manifest(Path(reference_root) / dataset)
    return manifest if manifest and manifest.get("tests") else None


def run_length(runs):
    """The longest schedule among ``runs``: config.max_iter, else the iterations done."""
    return max((r.get("config") or {}).get("max_iter") or r.get("iterations_done") or
               r["tests"][-1]["iter"] for r in runs)


def mean_curve(runs, key):
    """(iterations every seed was tested at, mean of ``key`` over the seeds there)."""
    common = sorted(set.intersection(*({t["iter"] for t in r["tests"]} for r in runs)))
    values = [sum(next(t[key] for t in r["tests"] if t["iter"] == it) for r in runs) / len(runs)
              for it in common]
    return common, values


def mark_paper_points(ax, runs, x_max):
    """The paper's test iterations as vertical lines within the plotted range, or a note."""
    inside = [p for p in paper.curve_points(run_length(runs)) if p <= x_max]
    for i, point in enumerate(inside):
        ax.axvline(point, color="black", alpha=0.35, linestyle="--", lw=0.8,
                   label="paper's test points" if i == 0 else None)
    if not inside:
        where = ", ".join(sci(p) for p in paper.curve_points())
        ax.text(0.98, 0.03, f"paper: tests at {where}", transform=ax.transAxes, ha="right",
                va="bottom", fontsize=8, color="dimgrey")


def plot_panel(ax, runs, compare, title, key="psnr"):
    """One panel: ``key`` curves of ``runs`` per value of their ``compare`` field, each seed
    faint and the mean over seeds bold; the bicubic line and the paper's test points."""
    metric = METRICS[key]
    x_max = 0
    for colour, value in zip(COLOURS * 4, sorted({r[compare] for r in runs})):
        group = sorted((r for r in runs if r[compare] == value), key=lambda r: r.get("seed", 0))
        for r in group:
            iters = [t["iter"] for t in r["tests"]]
            x_max = max(x_max, iters[-1])
            ax.plot(iters, [t[key] for t in r["tests"]], color=colour, alpha=0.3, lw=0.8)
        iters, mean = mean_curve(group, key)
        seeds = (f"mean of {len(group)} seeds" if len(group) > 1
                 else f"seed {group[0].get('seed', 0)}")
        style = ACTIVATIONS[value].style if value in ACTIVATIONS else "-"  # solvers: solid
        ax.plot(iters, mean, style, color=colour, lw=2, marker="o", markersize=3,
                label=f"{value} ({seeds})")
    bicubic = (runs[0].get("bicubic") or {}).get(key) if runs else None
    if bicubic is not None:
        ax.axhline(bicubic, color="grey", linestyle=":", label="bicubic")
    if runs:
        mark_paper_points(ax, runs, x_max)
    unit = f" ({metric.unit})" if metric.unit else ""
    ax.set(title=title, xlabel="iterations", ylabel=f"average test {metric.title}{unit}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def save(fig, path):
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def suffix(key):
    return "" if key == "psnr" else f"_{key}"


def plot_figure(runs, dataset, figure, out_dir, key="psnr"):
    """Write ``<out_dir>/<dataset>_<figure>.png``; returns its path, or None with no runs."""
    compare, group, title = FIGURES[figure]
    groups = sorted({r[group] for r in runs})
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, value in zip(axes[0], groups):
        plot_panel(ax, [r for r in runs if r[group] == value], compare,
                   f"{dataset}: {title} ({value})", key)
    return save(fig, Path(out_dir) / f"{dataset}_{figure}{suffix(key)}.png")


def plot_long(reference, dataset, out_dir, key="psnr"):
    """``<out_dir>/<dataset>_long.png``: the long-schedule reference run's curve."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    variant = f"{reference['act']}_{reference['solver']}"
    plot_panel(ax, [dict(reference, variant=variant)], "variant", f"{dataset}: long schedule "
               f"({sci(reference['tests'][-1]['iter'])} iterations)", key)
    return save(fig, Path(out_dir) / f"{dataset}_long{suffix(key)}.png")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.curves", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=ROOT / "runs", help="runs root (default runs/)")
    p.add_argument("--reference", type=Path, default=REFERENCE_ROOT,
                   help="long-schedule reference runs (default models/reference/)")
    p.add_argument("--out", type=Path, default=ROOT / "figures", help="output folder")
    p.add_argument("--dataset", action="append", help="data sets (default: every one with runs)")
    p.add_argument("--metric", choices=tuple(METRICS), default="psnr",
                   help="the metric plotted (default psnr, as the paper)")
    args = p.parse_args(argv)
    datasets = args.dataset or sorted({d.name for root in (args.runs, args.reference)
                                       for d in root.glob("*") if d.is_dir()})
    written = []
    for dataset in datasets:
        runs = load_runs(args.runs, dataset)
        written += [plot_figure(runs, dataset, fig, args.out, args.metric) for fig in FIGURES]
        reference = load_reference(args.reference, dataset)
        if reference:
            written.append(plot_long(reference, dataset, args.out, args.metric))
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
