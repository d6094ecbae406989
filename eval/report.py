"""`python -m eval.report` (last step of `make reproduce`): REPORT.md from what was run: the
results/*.json tables, the run manifests, the figures, and the paper's numbers (core.paper). It
reports only files that exist, and replaces only a report it wrote (its first line: core.outputs)."""
import json
import sys
from pathlib import Path

from core import paper
from core.args import command_line
from core.atomic import write_text_atomic
from core.cli import guarded
from core.config import DATASETS, ROOT
from core.machine import machine_line
from core.outputs import check_replace
from core.run_files import git_commit, long_dirs, read_manifest, run_label
from eval.claims import IMAGE_RULE, PATIENT_RULE, RULE, claim_lines, long_claim_lines
from eval.metrics import METRICS
from eval.report_tables import (dataset_title, fig5_table, paper_images_table, patient_table,
                                patients_of, sci, seeds_table, signed, split, summary_table)
from eval.results import LONG_SCHEDULE, TABLES_MARK, find_run_dirs

DEFAULT_COMMAND = "make reproduce"
TITLE = "# REPORT: medsr-caffe reproduction"  # the first line, and the report's mark
FIGURES = (("fig3", "Fig. 3: the activations compared, per solver (test PSNR against iterations; "
                    "faint: each seed, bold: their mean; one panel of every variant where no two "
                    "differ in the activation alone)"),
           ("fig4", "Fig. 4: the solvers compared, per activation"),
           ("long", "The long schedules: the reference weights and the other variants packed beside them"),
           ("long_pairs", "Figs. 3 and 4 at the long schedule: each pair that differs in one factor, "
                          "A's test PSNR minus B's (above zero: A ahead)"),
           ("fig6", "Fig. 6: LR | bicubic | network | original"))


def budget_table(root, datasets):
    """One row per run and seed (and the long schedule): iterations done against the paper's
    max_iter, wall time, last periodic test and bicubic."""
    max_iter = paper.schedule()["max_iter"]
    head = ["data set", "run", "seed", "iterations", f"of the paper's {sci(max_iter)}", "wall time"]
    head += [f"final test {m.title}" for m in METRICS.values()]
    head += [f"bicubic {m.title}" for m in METRICS.values()]
    lines = [f"| {' | '.join(head)} |", "|---" * len(head) + "|"]
    for dataset in datasets:
        dirs = [(d, None) for d in find_run_dirs(dataset, root)]
        dirs += [(folder, LONG_SCHEDULE) for folder in long_dirs(dataset, root).values()]
        for run_dir, name in dirs:
            m = read_manifest(run_dir)
            if not m or not m.get("tests"):
                continue
            it, last, bicubic = m.get("iterations_done", 0), m["tests"][-1], m.get("bicubic") or {}
            variant, _, _ = run_label(m).partition("/")
            cells = [dataset, f"{name} ({variant})" if name else variant, str(m.get("seed", 0)),
                     str(it), f"{it / max_iter:.2%}", f"{m.get('wall_time_s', 0) / 60:.1f} min"]
            cells += [unit(metric, last.get(k)) for k, metric in METRICS.items()]
            cells += [unit(metric, bicubic.get(k)) for k, metric in METRICS.items()]
            lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines) if len(lines) > 2 else "No run has a test point yet (make grid)."


def unit(metric, value):
    if value is None:
        return "–"
    return metric.format(value) + (f" {metric.unit}" if metric.unit else "")


def figures_part(root, dataset):
    parts = []
    for fig, caption in FIGURES:
        if (root / "figures" / f"{dataset}_{fig}.png").is_file():
            parts += [f"{caption}", "", f"![{caption}](figures/{dataset}_{fig}.png)", ""]
    return parts


def dataset_section(root, dataset, result):
    bicubic, variants, longs = split(result)
    patients = patients_of(result)
    plural = "" if patients is None or len(patients) == 1 else "s"
    of = "" if patients is None else f" of {len(patients)} test patient{plural}"
    parts = [f"## {dataset_title(dataset)}", "",
             f"Test images: {len(bicubic['images'])}{of}, x{result['scale']}."]
    entry = paper.dataset(dataset)
    if entry and entry.get("test_images") not in (None, len(bicubic["images"])):
        parts[-1] += f" The paper used {entry['test_images']}."
    parts.append("")
    for key, metric in METRICS.items():
        unit_text = f" ({metric.unit})" if metric.unit else ""
        parts += [f"### Fig. 5: {dataset}, {metric.title}{unit_text} per test image", "",
                  fig5_table(dataset, result, key), ""]
    if patients is not None:
        parts += patients_part(result, len(patients))
    images = paper_images_table(dataset)
    if images:
        parts += ["The paper's per-image values where its Fig. 5 is legible (its order; our test "
                  "slices need not be the paper's):", "", images, ""]
    parts += ["### Each seed", "", seeds_table(result), "", "### The paper's claims", ""]
    parts += claim_lines(variants, bicubic) + [""]
    if longs:
        parts += ["### The long schedules", ""] + long_part(longs, bicubic) + [""]
    return "\n".join(parts + figures_part(root, dataset))


def patients_part(result, count):
    """Each metric per test patient (its mean over its images), the mean over patients ± sd."""
    how = ("the claims below are judged per patient" if count >= 2 else
           "one test patient: its mean is the mean over its images; the claims are judged per image")
    parts = [f"### Per patient ({how}: see How the claims are judged)", ""]
    for key, metric in METRICS.items():
        unit_text = f" ({metric.unit})" if metric.unit else ""
        parts += [f"{metric.title}{unit_text}, each patient's mean over its test images:", "",
                  patient_table(result, key), ""]
    return parts


def long_part(longs, bicubic):
    """Each long schedule's gain over bicubic, then the claims between them (one run each: judged
    per image, eval.claims.long_claim_lines)."""
    lines = []
    for variant, entry in longs.items():
        gains = ", ".join(f"{m.title} {signed(m, entry['mean'][k] - bicubic['mean'][k])}"
                          f"{f' {m.unit}' if m.unit else ''}" for k, m in METRICS.items())
        lines.append(f"- {variant}, {entry.get('iterations')} iterations (one run), over bicubic: "
                     f"{gains}.")
    claims = long_claim_lines(longs)
    if claims:
        lines += ["", "Between them (`make reference DATASET=<d> ACT=<act> SOLVER=<solver>` trains "
                  "and continues each; one seed, so the images judge):", ""] + claims
    return lines


def load_results(root, datasets):
    """{dataset: results JSON} of the data sets that have results/<dataset>.json."""
    out = {}
    for dataset in datasets:
        path = root / "results" / f"{dataset}.json"
        if path.is_file():
            out[dataset] = json.loads(path.read_text())
    return out


def cohort_results(root):
    """The data sets besides the default ones that `make eval` scored per patient (their
    results/<name>.json has patients): a cohort's section follows the default sets'."""
    names = []
    for path in sorted((Path(root) / "results").glob("*.json")):
        if path.stem in DATASETS:
            continue
        try:
            table = json.loads(path.read_text())
            if table.get("producer") == TABLES_MARK and patients_of(table) is not None:
                names.append(path.stem)
        except (OSError, ValueError, AttributeError, KeyError, TypeError):  # not a table of eval's
            continue
    return names


def report(root=ROOT, datasets=None, command=DEFAULT_COMMAND):
    """REPORT.md's text over ``datasets`` (default: the default data sets, then every cohort set
    scored per patient: :func:`cohort_results`)."""
    root = Path(root)
    datasets = list(DATASETS) + cohort_results(root) if datasets is None else datasets
    results = load_results(root, datasets)
    max_iter = paper.schedule()["max_iter"]
    head = [
        TITLE, "",
        f"Generated by `python -m eval.report` from the runs, results and figures in this checkout "
        f"(git {git_commit()}), on {machine_line()}.", "", "## Commands", "",
        "```sh", "make setup        # once: Debian packages, Caffe, .venv",
        f"{command:<17} # data, grid, eval, curves, figures, then this report", "```", ""]
    if results:
        head += ["## Summary: the paper's Fig. 5 means beside ours", "",
                 "Paper: its Fig. 5 means (core/paper_fig5.json) of bicubic and its net, RReLU + "
                 "Nesterov. Ours: bicubic, and the same net as the mean ± sample sd over seeds; "
                 "gain = net - bicubic.", ""]
        for key, metric in METRICS.items():
            unit_text = f" ({metric.unit})" if metric.unit else ""
            head += [f"### {metric.title}{unit_text}", "", summary_table(results, key), ""]
    by_patient = any(patients_of(r) is not None for r in results.values())
    head += ["## How the claims are judged", "", RULE, "", IMAGE_RULE, ""]
    head += [PATIENT_RULE, ""] if by_patient else []
    head += ["## Iteration budget", "",
             f"The paper trains each network for {sci(max_iter)} iterations. These runs used the "
             "budget below, set by the default profile (`core/config.py`, `max_iter`) or "
             "`ITERS=`/`PROFILE=paper`: numbers from far fewer iterations are not the paper's "
             "converged results.", "", budget_table(root, datasets), ""]
    body = [dataset_section(root, d, r) for d, r in results.items()]
    return "\n".join(head + body) + "\n"


def main(argv=None):
    p = command_line("eval.report", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "REPORT.md")
    p.add_argument("--datasets", nargs="+", metavar="NAME",
                   help="the data sets to report (default: the default ones, then every cohort set "
                        "make eval scored per patient)")
    p.add_argument("--command", default=DEFAULT_COMMAND,
                   help=f"the command that produced the runs, printed in the report "
                        f"(default {DEFAULT_COMMAND!r}; e.g. 'make reproduce GRID=full SEEDS=3')")
    args = p.parse_args(argv)
    return guarded("report", lambda: write_report(args.out, args.command, args.datasets))


def write_report(out, command, datasets=None):
    check_replace(out, report_refusal)  # before the work
    text = report(command=command) if datasets is None else report(command=command, datasets=datasets)
    write_text_atomic(out, text)
    print(f"report: wrote {out}")
    return 0


def report_refusal(path):
    """None when ``path`` is a report this module wrote (its first line); else why not."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            if f.readline().rstrip("\n") == TITLE:
                return None
    except OSError:
        pass
    return f"it is not a report that eval.report wrote (its first line is not {TITLE!r})"


if __name__ == "__main__":
    sys.exit(main())
