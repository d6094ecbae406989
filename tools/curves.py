"""`make curves` / `python -m tools.curves`: the paper's Figs. 3 and 4 from run manifests.

Per data set: Fig. 3 compares the activations (one panel per solver), Fig. 4 the solvers, every
solver type present (one panel per activation): average test PSNR against iterations, each seed
faint and the mean over seeds bold, the bicubic PSNR as a horizontal line, and the iterations at
which the paper sampled its curves (core.paper) as vertical lines where they fall in the plotted
range (else the x label says where). A panel is drawn only where it compares something, and is
titled by what it holds; where no two runs differ in that one factor (the default grid: the paper's
net and its baseline), the figure is one panel of every variant present. The long schedules
(models/reference/<dataset>/ and models/long/<dataset>/*/) share <dataset>_long.png, and
<dataset>_long_pairs.png shows Figs. 3 and 4 at that schedule as differences: one panel per two of
them that differ in one factor, the curve above zero where the claim holds.
"""
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt  # noqa: E402

from core.activations import ACTIVATIONS  # noqa: E402
from core import paper  # noqa: E402
from core.args import command_line  # noqa: E402
from core.atomic import atomic_path  # noqa: E402
from core.config import ROOT  # noqa: E402
from core.names import manifest_variant  # noqa: E402
from core.run_files import LONG_ROOT, REFERENCE_ROOT, read_manifest  # noqa: E402
from eval.claims import one_factor_pairs  # noqa: E402
from eval.metrics import METRICS  # noqa: E402
from eval.report_tables import sci  # noqa: E402
from eval.results import run_dirs_under  # noqa: E402

FIGURES = {"fig3": ("act", "solver"), "fig4": ("solver", "act")}  # compared, and one panel per
COLOURS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def load_runs(runs_root, dataset):
    """Manifests of a data set's runs (every seed, either layout) that have a test point."""
    runs = [read_manifest(d) for d in run_dirs_under(Path(runs_root) / dataset)]
    return [m for m in runs if m and m.get("tests")]


def load_long(reference_root, dataset, long_root=None):
    """The manifests of the data set's long schedules: the reference run's, then the packed
    other variants' (models/long/<dataset>/*/), each with a test point."""
    folders = [Path(reference_root) / dataset]
    if long_root is not None:
        folders += sorted(p for p in (Path(long_root) / dataset).glob("*") if p.is_dir())
    manifests = [read_manifest(f) for f in folders]
    return [m for m in manifests if m and m.get("tests")]


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
    if not inside:  # in the x label, where no legend or curve can cover it
        where = ", ".join(sci(p) for p in paper.curve_points())
        ax.set_xlabel(f"iterations (the paper tested at {where})")


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
    ax.set(title=title, ylabel=f"average test {metric.title}{unit}")
    if not ax.get_xlabel():
        ax.set_xlabel("iterations")
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


def panels(runs, compare, group):
    """[(title, runs, field compared)] of a figure: one per value of ``group`` under which
    ``compare`` takes two values or more; else one panel of every variant present."""
    out = []
    for value in sorted({r[group] for r in runs}):
        members = [r for r in runs if r[group] == value]
        compared = sorted({r[compare] for r in members})
        if len(compared) > 1:
            out.append((f"{group} {value}: {' vs '.join(compared)}", members, compare))
    if out or not runs:
        return out
    with_variant = [dict(r, variant=manifest_variant(r)) for r in runs]
    return [(" vs ".join(sorted({r["variant"] for r in with_variant})), with_variant, "variant")]


def plot_figure(runs, dataset, figure, out_dir, key="psnr"):
    """Write ``<out_dir>/<dataset>_<figure>.png``; returns its path, or None with no runs."""
    compare, group = FIGURES[figure]
    shown = panels(runs, compare, group)
    if not shown:
        return None
    fig, axes = plt.subplots(1, len(shown), figsize=(5.5 * len(shown), 4), squeeze=False)
    for ax, (title, members, field) in zip(axes[0], shown):
        plot_panel(ax, members, field, f"{dataset}, {title}", key)
    return save(fig, Path(out_dir) / f"{dataset}_{figure}{suffix(key)}.png")


def plot_long(longs, dataset, out_dir, key="psnr"):
    """``<out_dir>/<dataset>_long.png``: the long schedules' curves, one per variant, and beside
    them each other variant's difference from the first (the reference weights' run), where the
    curves themselves lie too close to tell apart."""
    runs = [dict(m, variant=manifest_variant(m)) for m in longs]
    most = max(m["tests"][-1]["iter"] for m in longs)
    fig, axes = plt.subplots(1, 1 + (len(runs) > 1), figsize=(6.5 * (1 + (len(runs) > 1)), 4.5),
                             squeeze=False)
    plot_panel(axes[0][0], runs, "variant", f"{dataset}: long schedules (to {sci(most)} iterations)", key)
    if len(runs) > 1:
        plot_differences(axes[0][1], runs, key)
    return save(fig, Path(out_dir) / f"{dataset}_long{suffix(key)}.png")


def plot_differences(ax, runs, key):
    """Each run's ``key`` minus the first run's, at the iterations both were tested at."""
    base = {t["iter"]: t[key] for t in runs[0]["tests"]}
    colours = dict(zip(sorted({r["variant"] for r in runs}), COLOURS * 4))  # as plot_panel's
    for run in runs[1:]:
        colour = colours[run["variant"]]
        points = [(t["iter"], t[key] - base[t["iter"]]) for t in run["tests"] if t["iter"] in base]
        if points:
            ax.plot(*zip(*points), color=colour, lw=1.5, label=f"{run['variant']} - {runs[0]['variant']}")
    ax.axhline(0, color="grey", lw=0.8)
    metric = METRICS[key]
    unit = f" ({metric.unit})" if metric.unit else ""
    ax.set(title=f"difference from {runs[0]['variant']}", xlabel="iterations",
           ylabel=f"test {metric.title} difference{unit}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_long_pairs(longs, dataset, out_dir, key="psnr"):
    """``<out_dir>/<dataset>_long_pairs.png``: Figs. 3 and 4 at the long schedule, as differences:
    one panel per two long schedules that differ in one factor (eval.claims.one_factor_pairs, the
    paper's claims first), A's test value minus B's at the iterations both were tested at, so that
    "A beats B" is the curve above zero. None where no such pair is packed."""
    runs = {manifest_variant(m): m for m in longs}
    pairs = one_factor_pairs(runs)
    if not pairs:
        return None
    metric = METRICS[key]
    unit = f" ({metric.unit})" if metric.unit else ""
    cols = min(len(pairs), 2)
    rows = -(-len(pairs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), squeeze=False)
    for ax, (title, a, b) in zip(axes.flat, pairs):
        base = {t["iter"]: t[key] for t in runs[b]["tests"]}
        points = [(t["iter"], t[key] - base[t["iter"]]) for t in runs[a]["tests"] if t["iter"] in base]
        if points:
            ax.plot(*zip(*points), color=COLOURS[0], lw=1.5, label=f"{a} - {b}")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(title=f"{dataset}: {title}", xlabel="iterations",
               ylabel=f"test {metric.title} difference{unit}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(pairs):]:
        ax.set_visible(False)
    return save(fig, Path(out_dir) / f"{dataset}_long_pairs{suffix(key)}.png")


def main(argv=None):
    p = command_line("tools.curves", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=ROOT / "runs", help="runs root (default runs/)")
    p.add_argument("--reference", type=Path, default=REFERENCE_ROOT,
                   help="long-schedule reference runs (default models/reference/)")
    p.add_argument("--long", type=Path, default=LONG_ROOT,
                   help="the other variants' long schedules (default models/long/)")
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
        longs = load_long(args.reference, dataset, args.long)
        if longs:
            written.append(plot_long(longs, dataset, args.out, args.metric))
            written.append(plot_long_pairs(longs, dataset, args.out, args.metric))
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
