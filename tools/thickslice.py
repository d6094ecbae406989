"""`make thickslice` / `python -m tools.thickslice`: through-plane super-resolution of a thick-slice
scan, trained on the scan itself (self-supervised, after SMORE), with the paper's net.

    python -m tools.thickslice --in scan.nii.gz --out scan_sr.nii.gz [--factor N] [--iters N]
    python -m tools.thickslice --study UID --series REGEX [--pacs URL] [--out DIR] [...]
                               [--act rrelu] [--solver adam] [--profile gaussian|boxcar]
                               [--work DIR] [--retrain] [--force] [KEY=VALUE ...]

1. read the volume and its spacing; the factor is slice spacing / in-plane spacing;
2. training pairs: the scan's in-plane slices, thickened along one in-plane axis at a time with
   the slice profile (a Gaussian of FWHM = the slice thickness) and interpolated back
   (``data_prep.one_axis``), into a data set folder named by its recipe's digest
   (``data_prep.thick_data``), a few slices held out for the run's test;
3. the paper's net trained on them by ``tools.train``, in a run folder named by the pairs and the
   settings (a rerun continues or reuses it: :func:`choose_run`);
4. every reformat through the slice axis super-resolved (and, mirrored along that axis, again:
   ``--flip``) and the two orientations averaged (``inference.through_plane``), NaN and
   infinite voxels put back where they were; written in the input's format with the slice
   spacing / factor.

With ``--study``, each matching series of a study on a PACS is fetched, refined as above and
stored back into the study (``inference.upscale_pacs``: all or nothing per series, never twice).

Steps 2 to 4 hold a lock on the work folder (one per scan: its voxels and geometry, under
``runs/thickslice/``): a second command on the same work folder is refused before it builds
anything.
"""
if __name__ == "__main__":  # Ctrl-C while Caffe and OpenCV load: no traceback (core.cli)
    from core.cli import exit_quietly_until_main
    exit_quietly_until_main()

import argparse
import hashlib
import json
import re
import signal
import sys
from pathlib import Path

import numpy as np

from core.args import command_line
from core.cli import guarded, terminate_as_interrupt
from core.config import (ACTIVATIONS, ROOT, SOLVERS, THICKSLICE_ACT, THICKSLICE_FLIP,
                         THICKSLICE_PROFILE, THICKSLICE_SETTINGS, THICKSLICE_SOLVER, ConfigError)
from core.errors import DataError
from core.locks import exclusive, lock_beside
from core.run_files import read_manifest
from data_prep.intensity import percentile_window
from data_prep.one_axis import PROFILES
from data_prep.thick_scan import read_scan, write_scan

WORK_ROOT = ROOT / "runs" / "thickslice"  # one folder per scan: its data sets and runs
INTERRUPTED = 130  # Ctrl-C or SIGTERM, wherever it lands (docs/reliability.md)


def parse_args(argv):
    p = command_line("tools.thickslice", description=__doc__.splitlines()[0])
    p.add_argument("--in", dest="input", type=Path,
                   help="a thick-slice volume: NIfTI (.nii, .nii.gz, .hdr/.img), NRRD, MetaImage, "
                        "or a DICOM series folder")
    p.add_argument("--out", type=Path,
                   help="the refined volume, in the input's format (a folder for a DICOM series); "
                        "with --study: a folder that also keeps each stored series (optional)")
    p.add_argument("--study", metavar="UID", help="instead of --in: the StudyInstanceUID of a "
                   "study on the PACS; each --series of it refined and stored back (docs/pacs.md)")
    p.add_argument("--series", metavar="REGEX", help="with --study: the series to refine, by "
                   "SeriesDescription (case-insensitive search)")
    p.add_argument("--pacs", metavar="URL", help="with --study: the DICOMweb server (default "
                   "$MEDSR_PACS_URL; credentials from $MEDSR_PACS_CREDENTIALS, never here)")
    p.add_argument("--factor", default="auto", help="slices per thick slice: auto (slice spacing / "
                   "in-plane spacing, which must be an integer) or N")
    p.add_argument("--iters", help="training iterations (default: max_iter of "
                   "core.config.THICKSLICE_SETTINGS)")
    p.add_argument("--act", default=THICKSLICE_ACT, choices=ACTIVATIONS)
    p.add_argument("--solver", default=THICKSLICE_SOLVER, choices=tuple(SOLVERS))
    p.add_argument("--profile", default=THICKSLICE_PROFILE, choices=PROFILES,
                   help="the slice profile: a Gaussian of FWHM = the slice thickness (the "
                        "header's, else the spacing), or a boxcar as wide")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=THICKSLICE_FLIP,
                   help="also run the net on each reformat mirrored along the slice axis and "
                        "average (default: on; --no-flip halves the pass)")
    p.add_argument("--seed", default="0", help="repeat K of the run (tools.train --seed)")
    p.add_argument("--work", type=Path, help=f"data sets and runs (default {WORK_ROOT}/"
                   "<scan name>-<digest of its voxels and geometry>)")
    p.add_argument("--retrain", action="store_true", help="train anew instead of continuing")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training config overrides")
    args = p.parse_intermixed_args(argv)  # KEY=VALUE before or after the options
    if args.study is None:
        for option, value in (("--in", args.input), ("--out", args.out)):
            if value is None:
                p.error(f"the following arguments are required: {option} (or --study)")
        if args.series is not None or args.pacs is not None:
            p.error("--series and --pacs go with --study")
    elif args.input is not None:
        p.error("--in and --study: give one (--study reads its series from the PACS)")
    elif args.series is None:
        p.error("--study needs --series REGEX, the series of the study to refine ('.' for all)")
    if args.factor != "auto" and not re.fullmatch(r"\d+", args.factor):
        p.error(f"--factor must be auto or a whole number, got {args.factor!r}")
    args.factor = None if args.factor == "auto" else int(args.factor)
    args.iters = None if args.iters is None else whole(p, "--iters", args.iters, least=1)
    args.seed = whole(p, "--seed", args.seed, least=0)
    return args


def whole(parser, option, text, least):
    """``text`` as an int of at least ``least``, or the parser's one-line error."""
    if not re.fullmatch(r"\s*[+-]?\d+\s*", text) or int(text) < least:
        parser.error(f"{option} must be a whole number of at least {least}, got {text!r}")
    return int(text)


def scan_name(path):
    """A folder name for the scan: its file name without the volume extensions."""
    name = re.sub(r"(\.nii\.gz|\.nii|\.nrrd|\.nhdr|\.mha|\.mhd|\.hdr|\.img)$", "", Path(path).name,
                  flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "scan"


def scan_digest(scan):
    """The scan's identity: its voxels (NaN and infinite ones too) and its geometry."""
    geometry = {"shape": list(scan.values.shape), "affine": np.asarray(scan.affine).tolist(),
                "axis": scan.axis, "spacing": list(scan.spacing), "thickness": scan.thickness}
    digest = hashlib.sha256(json.dumps(geometry, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(scan.values, dtype=np.float64).tobytes())
    return digest.hexdigest()


def work_folder(path, scan):
    """The default work folder: the scan's name for the reader, its digest for the identity (two
    scans of one name have two folders; a scan renamed or copied keeps its digest)."""
    return WORK_ROOT / f"{scan_name(path)}-{scan_digest(scan)[:12]}"


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


def settings_key(dataset, act, solver, cfg):
    """The run's identity besides its length: the pairs (their data set's name is their digest),
    the net and solver, and every setting that must match for the trainer to continue a run
    (``tools.train_run_dir.comparable``: all but max_iter and the build-only keys)."""
    from tools.train_run_dir import comparable
    text = json.dumps({"pairs": dataset, "act": act, "solver": solver,
                       "config": comparable(cfg.as_dict())}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def choose_run(work, dataset, args, cfg):
    """(run folder, the trainer's flag, what happens in words) for training ``cfg.max_iter``
    iterations on ``dataset`` with these settings. A run of the same pairs and settings is
    finished as it is (reused), continued to more iterations, or, when it has gone past the
    iterations asked for, left alone for a run of its own of that length: never relabelled."""
    key = f"{args.act}_{args.solver}-{settings_key(dataset, args.act, args.solver, cfg)}"
    run_dir = work / key / f"seed{args.seed}"
    want = cfg.max_iter
    if args.retrain:
        return run_dir, "--force", f"training anew to {want} iterations (--retrain)"
    old = read_manifest(run_dir)
    if old is None:
        return run_dir, "--resume", f"a new run of {want} iterations"
    if old.get("dataset") != dataset:  # only a copied or hand-made folder: not this run's pairs
        return run_dir, "--force", f"a new run of {want} iterations (the folder held a run of other pairs)"
    last = old["snapshots"][-1]["iter"] if old.get("snapshots") else 0
    finished = old.get("status") == "done"
    reached = old.get("iterations_done", 0) if finished else last  # where a rerun would start
    if finished and reached == want == last:
        return run_dir, "--resume", f"the finished run of {want} iterations, reused"
    if reached <= want:
        return run_dir, "--resume", (f"continuing the run from iteration {last} to {want}" if last
                                     else f"a new run of {want} iterations")
    shorter = work / f"{key}-iters{want}" / f"seed{args.seed}"
    own = read_manifest(shorter) or {}
    what = ("the finished run of that length, reused" if own.get("status") == "done"
            and own.get("iterations_done") == want else f"a run of {want} iterations of its own")
    return shorter, "--resume", f"the run in {run_dir} has {reached} iterations, more than {want}: {what}"


def train(args, scan, volume01, factor, work):
    """Build (or reuse) the data set and train (continue, or reuse) the run: (its directory,
    its data set's manifest, the trainer's exit status)."""
    from core.config import dataset_config
    from data_prep.thick_data import build_thick_data, dataset_name, remove_other_pairs
    from tools import train as trainer

    overrides = [*THICKSLICE_SETTINGS, *(f"max_iter={args.iters}",) * (args.iters is not None),
                 *args.overrides]
    cfg = dataset_config("pairs", overrides, solver=args.solver)
    width = scan.thickness / scan.in_plane  # the profile in in-plane pixels
    pairs = recipe(scan, volume01, factor, args.profile, width, cfg)
    dataset, data_root = dataset_name(pairs), work / "data"
    data, _ = build_thick_data(data_root / dataset, volume01, scan.axis, factor, cfg, pairs,
                               args.profile, width)
    remove_other_pairs(data_root, keep=dataset)  # one set of pairs on disk per work folder
    run_dir, flag, words = choose_run(work, dataset, args, cfg)
    print(f"thickslice: {words}: {run_dir}")
    argv = ["--dataset", dataset, "--data-root", str(data_root), "--act", args.act,
            "--solver", args.solver, "--seed", str(args.seed), "--run-dir", str(run_dir), flag,
            *overrides]
    status = trainer.run(trainer.parse_args(argv))
    terminate_as_interrupt()  # the trainer's handler only notes a signal: the net's pass must stop on one
    return run_dir, data, status


def report_check(run_dir, data):
    """The line of the run's own test: what it scores, the net beside the cubic."""
    from tools.periodic_test import task_line
    manifest, task = read_manifest(run_dir) or {}, data.get("test_task") or {}
    if not manifest.get("tests") or not manifest.get("bicubic") or not task:
        return
    print(f"thickslice: the run's own check, {task_line(task['factor'], task['profile'])} "
          f"({len(data['held_out_slices'])} slice(s)): PSNR {manifest['tests'][-1]['psnr']:.2f} dB, "
          f"cubic {manifest['bicubic']['psnr']:.2f} dB (iteration {manifest['tests'][-1]['iter']})")


def run(args):
    from inference.upscale import check_io
    check_io(args.input, args.out, args.force)  # before any work: bad paths fail fast
    scan = read_scan(args.input)
    factor = scan.factor(args.factor)
    volume01, (lo, hi) = normalised(scan)
    work = (args.work or work_folder(args.input, scan)).resolve()
    print(f"thickslice: {'x'.join(map(str, scan.values.shape))} voxels of "
          f"{' x '.join(f'{s:g}' for s in scan.spacing)} mm, slice axis {scan.axis}, factor {factor}, "
          f"{args.profile} profile of {scan.thickness:g} mm; work in {work}")
    # The whole command holds the work folder: its pairs are never replaced under another's run
    with exclusive(lock_beside(work), f"thickslice --in {args.input}", work):
        return refine(args, scan, volume01, (lo, hi), factor, work)


def refine(args, scan, volume01, window, factor, work):
    """Train (or reuse) the run and write the refined scan; the exit status."""
    run_dir, data, status = train(args, scan, volume01, factor, work)
    args.run_dir = run_dir  # for a caller that times or scores the run (tools.thickslice_validate)
    if status > 128:  # the trainer saved a snapshot and its manifest
        print(f"thickslice: interrupted ({signal.Signals(status - 128).name}) while training; no "
              f"output was written; the same command continues the run in {run_dir}", file=sys.stderr)
        return INTERRUPTED
    if status:  # diverged: the trainer said so
        return status
    report_check(run_dir, data)

    from inference.net import SRNet
    from inference.through_plane import restore_nonfinite, super_resolve
    from inference.upscale import resolve_run
    deploy, caffemodel, _ = resolve_run(run_dir)
    lo, hi = window
    fine = super_resolve(SRNet(deploy, caffemodel), volume01, scan.axis, factor, flip=args.flip)
    fine *= hi - lo
    fine += lo
    restore_nonfinite(fine, scan.values, scan.axis, factor)
    write_scan(args.out, scan, fine, factor,
               f"through-plane x{factor} super-resolution (SRCNN trained on this scan, "
               f"{run_dir.parent.name})", used_series_numbers=getattr(args, "used_numbers", ()))
    print(f"thickslice: {fine.shape[scan.axis]} slices of {scan.spacing[scan.axis] / factor:g} mm "
          f"-> {args.out} (run: {run_dir})")
    return 0


def run_pacs(args):
    """--study: each matching series of the study refined and stored back; 2 when a series
    failed (the summary names it), the others being stored."""
    from data_prep.dicomweb import connect
    from inference.upscale_pacs import pull_run_push, report

    def run_one(src, dst, used):
        status = run(argparse.Namespace(**{**vars(args), "input": src, "out": dst,
                                           "used_numbers": used}))
        if status == INTERRUPTED:
            raise KeyboardInterrupt
        if status:
            raise DataError(f"thickslice stopped with status {status}")

    method = "through-plane x" if args.factor is None else f"through-plane x{args.factor} "
    summary = pull_run_push(connect(args.pacs), args.study, args.series, run_one,
                            lambda ds: str(ds.get("DerivationDescription", "")).startswith(method),
                            keep=args.out)
    return report(summary, prog="thickslice")


def main(argv=None):
    args = parse_args(argv)
    from tools.train_run_dir import TrainError
    if args.study is not None:
        return guarded("thickslice", lambda: run_pacs(args), (DataError, ConfigError, TrainError),
                       left="; the series stored so far are kept, none half-stored")
    return guarded("thickslice", lambda: run(args), (DataError, ConfigError, TrainError),
                   left="; no output was written")


if __name__ == "__main__":
    sys.exit(main())
