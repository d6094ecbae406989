"""`make thickslice` / `python -m tools.thickslice`: through-plane super-resolution of a thick-slice
scan, trained on the scan itself (self-supervised, after SMORE), with the paper's net.

    python -m tools.thickslice --in scan.nii.gz --out scan_sr.nii.gz [--factor N] [--iters N]
                               [--act rrelu] [--solver adam] [--profile gaussian|boxcar]
                               [--work DIR] [--retrain] [--force] [KEY=VALUE ...]

1. read the volume and its spacing; the factor is slice spacing / in-plane spacing;
2. training pairs: the scan's in-plane slices, thickened along one in-plane axis at a time with
   the slice profile (a Gaussian of FWHM = the slice thickness) and interpolated back
   (``data_prep.one_axis``), into a data set folder under ``--work``;
3. the paper's net trained on them by ``tools.train`` (a run folder with its manifest; rerun
   resumes, a finished run is reused);
4. every reformat through the slice axis super-resolved and the two orientations averaged
   (``eval.thickslice``); written in the input's format with the slice spacing / factor.
"""
if __name__ == "__main__":  # Ctrl-C while Caffe and OpenCV load: no traceback (core.cli)
    from core.cli import exit_quietly_until_main
    exit_quietly_until_main()

import argparse
import hashlib
import re
import sys
from pathlib import Path

import numpy as np

from core.cli import guarded, terminate_as_interrupt
from core.config import (ACTIVATIONS, ROOT, SOLVERS, THICKSLICE_ACT, THICKSLICE_PROFILE,
                         THICKSLICE_SETTINGS, THICKSLICE_SOLVER, ConfigError)
from core.errors import DataError
from data_prep.intensity import percentile_window
from data_prep.one_axis import PROFILES
from data_prep.thick_scan import read_scan, write_scan

WORK_ROOT = ROOT / "runs" / "thickslice"  # one folder per scan: its data set and runs


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m tools.thickslice", description=__doc__.splitlines()[0])
    p.add_argument("--in", dest="input", type=Path, required=True,
                   help="a thick-slice volume: NIfTI (.nii, .nii.gz, .hdr/.img), NRRD, MetaImage, "
                        "or a DICOM series folder")
    p.add_argument("--out", type=Path, required=True,
                   help="the refined volume, in the input's format (a folder for a DICOM series)")
    p.add_argument("--factor", default="auto", help="slices per thick slice: auto (slice spacing / "
                   "in-plane spacing, which must be an integer) or N")
    p.add_argument("--iters", type=int, help="training iterations (default: max_iter of "
                   "core.config.THICKSLICE_SETTINGS)")
    p.add_argument("--act", default=THICKSLICE_ACT, choices=ACTIVATIONS)
    p.add_argument("--solver", default=THICKSLICE_SOLVER, choices=tuple(SOLVERS))
    p.add_argument("--profile", default=THICKSLICE_PROFILE, choices=PROFILES,
                   help="the slice profile: a Gaussian of FWHM = the slice thickness (the "
                        "header's, else the spacing), or a boxcar as wide")
    p.add_argument("--seed", type=int, default=0, help="repeat K of the run (tools.train --seed)")
    p.add_argument("--work", type=Path, help=f"data set and runs (default {WORK_ROOT}/<scan name>)")
    p.add_argument("--retrain", action="store_true", help="train anew instead of resuming")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training config overrides")
    args = p.parse_intermixed_args(argv)  # KEY=VALUE before or after the options
    if args.factor != "auto" and not re.fullmatch(r"\d+", args.factor):
        p.error(f"--factor must be auto or a whole number, got {args.factor!r}")
    args.factor = None if args.factor == "auto" else int(args.factor)
    return args


def scan_name(path):
    """A folder name for the scan: its file name without the volume extensions."""
    name = re.sub(r"(\.nii\.gz|\.nii|\.nrrd|\.nhdr|\.mha|\.mhd|\.hdr|\.img)$", "", Path(path).name,
                  flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "scan"


def normalised(scan):
    """(volume in [0, 1] scale through the 0.5-99.5 percentile window, (lo, hi)). NaN and
    infinite voxels (a masked volume) are left out of the window and taken as its low end."""
    finite = np.isfinite(scan.values)
    lo, hi, _ = percentile_window(scan.values[finite] if not finite.all() else scan.values)
    hi = hi if hi > lo else lo + 1.0
    return (np.where(finite, scan.values, lo) - lo) / (hi - lo), (float(lo), float(hi))


def recipe(scan, volume01, factor, profile, width, cfg):
    """What the training pairs are made from and how: equal recipes give equal data sets."""
    digest = hashlib.sha256(np.ascontiguousarray(volume01, dtype=np.float32).tobytes()).hexdigest()
    return {"volume_sha256": digest, "axis": scan.axis, "factor": factor, "profile": profile,
            "width_px": width, "patch": cfg.patch, "label": cfg.label, "stride": cfg.stride_train,
            "data_seed": cfg.data_seed}


def train(args, scan, volume01, factor, work):
    """Build (or reuse) the data set and train (or resume) the run: (its directory, the trainer's
    exit status)."""
    from core.config import dataset_config
    from data_prep.thick_data import build_thick_data
    from tools import train as trainer

    overrides = [*THICKSLICE_SETTINGS, *(f"max_iter={args.iters}",) * (args.iters is not None),
                 *args.overrides]
    cfg = dataset_config("pairs", overrides, solver=args.solver)
    width = scan.thickness / scan.in_plane  # the profile in in-plane pixels
    data_root = work / "data"
    _, rebuilt = build_thick_data(data_root / "pairs", volume01, scan.axis, factor, cfg,
                                  recipe(scan, volume01, factor, args.profile, width, cfg),
                                  args.profile, width)
    run_dir = work / f"{args.act}_{args.solver}" / f"seed{args.seed}"
    argv = ["--dataset", "pairs", "--data-root", str(data_root), "--act", args.act,
            "--solver", args.solver, "--seed", str(args.seed), "--run-dir", str(run_dir),
            # new pairs (another scan of this name, another factor or profile): a new run
            "--force" if args.retrain or rebuilt else "--resume", *overrides]
    status = trainer.run(trainer.parse_args(argv))
    terminate_as_interrupt()  # the trainer's handler only notes a signal: the net's pass must stop on one
    return run_dir, status


def run(args):
    from eval.upscale import check_io
    check_io(args.input, args.out, args.force)  # before any work: bad paths fail fast
    scan = read_scan(args.input)
    factor = scan.factor(args.factor)
    volume01, (lo, hi) = normalised(scan)
    work = (args.work or WORK_ROOT / scan_name(args.input)).resolve()
    print(f"thickslice: {'x'.join(map(str, scan.values.shape))} voxels of "
          f"{' x '.join(f'{s:g}' for s in scan.spacing)} mm, slice axis {scan.axis}, factor {factor}, "
          f"{args.profile} profile of {scan.thickness:g} mm; work in {work}")
    run_dir, status = train(args, scan, volume01, factor, work)
    if status:  # interrupted or diverged: the trainer said so and how to go on
        return status

    from eval.infer import SRNet
    from eval.thickslice import super_resolve
    from eval.upscale import resolve_run
    deploy, caffemodel, _ = resolve_run(run_dir)
    fine = super_resolve(SRNet(deploy, caffemodel), volume01, scan.axis, factor)
    fine *= hi - lo
    fine += lo
    write_scan(args.out, scan, fine, factor,
               f"through-plane x{factor} super-resolution (SRCNN trained on this scan, {run_dir.name})")
    print(f"thickslice: {fine.shape[scan.axis]} slices of {scan.spacing[scan.axis] / factor:g} mm "
          f"-> {args.out} (run: {run_dir})")
    return 0


def main(argv=None):
    args = parse_args(argv)
    from tools.train import TrainError
    return guarded("thickslice", lambda: run(args), (DataError, ConfigError, TrainError),
                   left="; no output was written")


if __name__ == "__main__":
    sys.exit(main())
