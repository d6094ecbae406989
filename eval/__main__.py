"""`make eval` / `python -m eval`: PSNR/SSIM of bicubic and trained runs, per image and mean.

    python -m eval --dataset prostate                 data/prostate/test_images, every run of it
                                                      (runs/prostate/*/seed*/, and models/reference/
                                                      prostate/ as "long_schedule" when present)
    python -m eval --hr DIR --runs RUN [RUN ...] [--runs RUN] [--scale 3] [--json out.json]

Methods are named <act>_<solver>/seed<k>; two runs that share a name get their directory added.
The scale (and the scoring border, scale px per side) is the runs' own (config.scale); runs of
different scales, or a --scale that contradicts them, are refused with one line.
Writes JSON ({"producer", "scale", "methods": {name: {"variant", "seed", "iterations", "run",
"images", "mean"}}}; a cohort set, whose manifest names each test image's patient
(core.datasets.image_patients), adds per method "patients": {"n", "mean", "sd", "each"}, the mean
over patients of each one's mean over its images and the sd across them), CSV (one row per image
and method) and a Markdown table shaped like the paper's Fig. 5 (default: results/<name>.*): the
three together or none, each replacing only a table that eval wrote (its mark:
eval.results.table_refusal), refused in one line before any image is scored otherwise.
"""
if __name__ == "__main__":  # Ctrl-C while Caffe and OpenCV load: no traceback (core.cli)
    from core.cli import exit_quietly_until_main
    exit_quietly_until_main()

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

from core.args import command_line  # noqa: E402
from core.cli import check_writable, guarded  # noqa: E402
from core.atomic import write_texts_atomic  # noqa: E402
from core.config import ROOT  # noqa: E402
from core.data_files import data_dir, is_built, test_images  # noqa: E402
from core.datasets import read_image_patients  # noqa: E402
from core.errors import DataError  # noqa: E402
from core.device import use_device  # noqa: E402
from core.outputs import check_replace  # noqa: E402
from eval.metrics import METRICS  # noqa: E402
from eval.results import (common_scale, dataset_methods, evaluate, name_runs,  # noqa: E402
                          table_refusal, tables_text)
from eval.score import load_hr_folder  # noqa: E402
from inference.tiles import BORDERS, ENGINES  # noqa: E402


def parse_args(argv):
    p = command_line("eval", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="score data/<dataset>/test_images and runs/<dataset>/*")
    src.add_argument("--hr", type=Path, help="any folder of HR images (grey, or RGB -> MATLAB Y)")
    src.add_argument("--built", nargs="+", metavar="DATASET",
                     help="as --dataset, for each of these data sets that is built (make eval)")
    p.add_argument("--runs", nargs="*", type=Path, action="extend",
                   help="run directories, repeatable (default with --dataset: all, and the long "
                        "schedule)")
    p.add_argument("--scale", type=int, default=None,
                   help="default: the runs' config.scale (they must agree); x3 with no run")
    p.add_argument("--engine", choices=ENGINES, default="caffe",
                   help="what runs the nets (inference.net.SRNet; onnx: ONNX Runtime on the graph "
                        "make export writes)")
    p.add_argument("--gpu", type=int, metavar="N",
                   help="run the nets on GPU N (engine caffe; a CUDA build: make setup GPU=1)")
    p.add_argument("--border", choices=BORDERS, default=BORDERS[0],
                   help="how the 6-px frame the valid convolutions lose is filled (docs/evaluation.md)")
    p.add_argument("--json", type=Path, help="default results/<name>.json")
    p.add_argument("--csv", type=Path, help="default results/<name>.csv")
    p.add_argument("--md", type=Path, help="default results/<name>.md")
    args = p.parse_args(argv)
    if args.gpu is not None and args.engine != "caffe":
        p.error(f"--gpu needs --engine caffe (the {args.engine} engine runs on the CPU)")
    if args.built and (args.runs is not None or args.json or args.csv or args.md):
        p.error("--built scores each data set with its own runs into results/<dataset>.*: "
                "no --runs, --json, --csv or --md")
    return args


def mean_line(name, method, r):
    """The means over images; a set of patients adds the mean ± sd over its patients."""
    values = ", ".join(f"{m.title} {m.format(r['mean'][k])}{' ' + m.unit if m.unit else ''}"
                       for k, m in METRICS.items())
    p = r.get("patients")
    if p:
        values += f" over {len(r['images'])} images; over {p['n']} patient(s): " + ", ".join(
            f"{m.title} {m.format(p['mean'][k])}"
            + ("" if p["sd"][k] is None else f" ± {m.format(p['sd'][k])}")
            + (f" {m.unit}" if m.unit else "") for k, m in METRICS.items())
    return f"eval: {name} {method}: {values}"


def outputs(args, name, inputs=()):
    """{"json", "csv", "md"}: where the tables go (results/<name>.* unless given), each checked
    before any image is scored: writable, and either new or a table of its kind that eval wrote
    (never one of ``inputs``, nor anything else: core.outputs.check_replace)."""
    paths = {kind: getattr(args, kind) or ROOT / "results" / f"{name}.{kind}" for kind in ("json", "csv", "md")}
    for kind, path in paths.items():
        if path.is_dir():
            raise DataError(f"{path}: --{kind} is a folder; name the file to write")
        check_writable(path, f"--{kind}")
        check_replace(path, lambda p, kind=kind: table_refusal(kind, p), inputs=inputs)
    return paths


def main(argv=None):
    args = parse_args(argv)
    return guarded("eval", lambda: run(args))


def run(args):
    if args.built:
        for name in args.built:
            if not is_built(data_dir(name)):
                print(f"eval: {name}: not built (make data DATASET={name}); skipped")
                continue
            score(argparse.Namespace(**{**vars(args), "dataset": name, "built": None}))
        return 0
    return score(args)


def score(args):
    """One data set, or a folder of HR images, against its runs: the tables and the means."""
    name = args.dataset or args.hr.name
    hr_dir = test_images(data_dir(args.dataset)) if args.dataset else args.hr
    paths = outputs(args, name, [hr_dir, *(args.runs or [])])
    if args.runs is not None:
        runs = name_runs(args.runs)
    else:
        runs = dataset_methods(args.dataset) if args.dataset else {}
    scale = common_scale(runs, args.scale)  # refuse a mix of scales before loading anything
    patients = read_image_patients(data_dir(args.dataset)) if args.dataset else None
    use_device(args.gpu)
    result = evaluate(load_hr_folder(hr_dir), runs, scale, args.engine, args.border, patients)
    texts = tables_text(result, name)
    write_texts_atomic({paths[kind]: texts[kind] for kind in paths})  # all three, or none
    for method, r in result["methods"].items():
        print(mean_line(name, method, r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
