"""`make data` / `python -m data_prep`: build HDF5 patch sets.

    python -m data_prep                       the three default data sets (skips up-to-date ones)
    python -m data_prep --dataset brain       one of them
    python -m data_prep --input PATH --name NAME [--test-count 7] [--axis 2] [--rule mr]
                                              your own DICOM/NIfTI/NRRD/MetaImage/PNG file or folder
    python -m data_prep --input TREE [TREE ...] --name NAME --series REGEX [--test-patients N|ID,ID]
                        [--test-slices K] [--patients map.csv] [-j N]
                                              your own cohort: study trees, split by patient
                                              (data_prep/cohort/, docs/data.md)
"""
if __name__ == "__main__":  # Ctrl-C while Caffe and OpenCV load: no traceback (core.cli)
    from core.cli import exit_quietly_until_main
    exit_quietly_until_main()

import json
import re
import sys
from pathlib import Path

from core.args import command_line
from core.cli import check_writable, guarded
from core.config import DATASETS, DEFAULT, ConfigError
from core.data_files import DATA_ROOT, manifest_path
from core.locks import exclusive, lock_beside

from .build import DATA_KEYS, FORMAT_VERSION, build_dataset
from .cohort.build import build_cohort
from core.datasets import DEFAULTS
from core.errors import DataError
from .intensity import RULES
from .readers import read_volume
from .sources import loader, split_central



def up_to_date(dest, cfg):
    """True when ``dest`` holds a complete data set built by this recipe and config."""
    try:
        manifest = json.loads(manifest_path(dest).read_text())
    except (OSError, ValueError):
        return False
    wanted = {k: getattr(cfg, k) for k in DATA_KEYS}
    return manifest.get("format_version") == FORMAT_VERSION and manifest.get("config") == wanted


def check_default_geometry(name, test):
    """The solver files' test_iter assumes the declared test shapes (core/datasets.py)."""
    spec = DEFAULTS[name]
    shapes = {tuple(d - d % DEFAULT.scale for d in s.image.shape) for s in test}
    if len(test) != spec.test_count or shapes != {spec.test_shape}:
        raise DataError(f"{name}: test images {sorted(shapes)} x{len(test)} differ from the declared "
                        f"{spec.test_shape} x{spec.test_count} in core/datasets.py")


def build_default(name, cfg, out, force):
    dest = out / name
    if not force and up_to_date(dest, cfg):
        print(f"data_prep: {name}: up to date ({dest})")
        return
    with exclusive(lock_beside(dest), f"data_prep --dataset {name}", dest):
        train, test, manifest = loader(name)(cfg)
        check_default_geometry(name, test)
        manifest = build_dataset(dest, train, test, cfg, manifest)
    print(f"data_prep: {name}: {manifest['patches']['train']} training and "
          f"{manifest['patches']['test']} test patches in {dest}")


def build_user(args, cfg):
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.name):
        raise DataError(f"--name {args.name!r}: use letters, digits, '_', '-' or '.'")
    dest = args.out / args.name
    if args.name in DATASETS and not args.force:
        raise DataError(f"--name {args.name} is a default data set: pick another name or add --force")
    if args.series is not None:
        lock = exclusive(lock_beside(dest), f"data_prep --name {args.name}", dest)
        manifest = build_cohort(args, cfg, build_dataset, lock)
        print(f"data_prep: {args.name}: {manifest['patches']['train']} training and "
              f"{manifest['patches']['test']} test patches in {dest}")
        return
    slices, info = read_volume(args.input[0], axis=args.axis, rule=args.rule)
    gap = 0 if info.get("intensity_scope") == "image" else args.gap  # separate pictures: no neighbours
    train, test, split = split_central(slices, args.test_count, gap)
    manifest = {"sources": [{"path": str(Path(args.input[0]).resolve()), "format": info["format"]}],
                "intensity": {"rule": info["rule"], "params": info["rule_params"]},
                "split": split | {"axis": args.axis}, "skipped": info.get("skipped", [])}
    with exclusive(lock_beside(dest), f"data_prep --name {args.name}", dest):
        manifest = build_dataset(dest, train, test, cfg, manifest)
    print(f"data_prep: {args.name}: {manifest['patches']['train']} training and "
          f"{manifest['patches']['test']} test patches in {dest}")


def parse_args(argv):
    p = command_line("data_prep", short="data_prep", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", action="append", choices=DATASETS, help="default data set(s) to build")
    p.add_argument("--input", type=Path, nargs="+", help="your DICOM file/series folder, NIfTI "
                   "(file or .hdr/.img pair), NRRD or MetaImage file, or image folder; with "
                   "--series: study trees (any depth), several allowed")
    p.add_argument("--series", metavar="REGEX", help="a cohort: use the series whose "
                   "SeriesDescription (else ProtocolName; a volume's file name) matches REGEX "
                   "(case-insensitive)")
    p.add_argument("--test-patients", metavar="N|ID,ID", help="with --series: N test patients "
                   "drawn with data_seed, or their PatientIDs (default: a fifth, at least one)")
    p.add_argument("--test-slices", type=int, metavar="K", help="with --series: the central K "
                   "slices of each test series are test images (default: all; one patient: "
                   "--test-count)")
    p.add_argument("--patients", type=Path, metavar="CSV", help="with --series: path,patient "
                   "rows naming each volume file's patient")
    p.add_argument("-j", "--jobs", type=int, default=1, help="with --series: processes that read "
                   "the headers (default 1; the data set is the same for any N)")
    p.add_argument("--name", help="name of the data set built from --input (data/<name>/)")
    p.add_argument("--test-count", type=int, default=5, help="test slices for --input (default 5)")
    p.add_argument("--axis", type=int, choices=(0, 1, 2), default=2, help="NIfTI slice axis (2: axial)")
    p.add_argument("--rule", choices=RULES, default="auto", help="intensity rule to 8 bits (docs/data.md)")
    p.add_argument("--gap", type=int, default=1, help="unused slices between test and training blocks")
    p.add_argument("--out", type=Path, default=DATA_ROOT, help="where data sets go (default data/)")
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (core/config.py)")
    args = p.parse_args(argv)
    if (args.input is None) != (args.name is None):
        p.error("--input and --name go together")
    if args.input is not None and args.dataset:
        p.error("--dataset builds a default data set; --input builds your own: give one")
    if args.test_count < 1 or args.gap < 0:
        p.error("--test-count must be >= 1 and --gap >= 0")
    check_cohort_args(p, args)
    return args


def check_cohort_args(p, args):
    """The cohort options (--series and the ones that need it), refused in one line."""
    cohort_only = {"--test-patients": args.test_patients, "--test-slices": args.test_slices,
                   "--patients": args.patients}
    if args.series is None:
        given = [k for k, v in cohort_only.items() if v is not None]
        if given:
            p.error(f"{given[0]} goes with --series (a cohort)")
        if args.input is not None and len(args.input) > 1:
            p.error(f"--input: {len(args.input)} paths ({', '.join(map(str, args.input[:3]))}) "
                    "are a cohort: add --series REGEX (KEY=VALUE overrides go after the options)")
        return
    if args.input is None:
        p.error("--series goes with --input and --name")
    try:
        re.compile(args.series)
    except re.error as exc:
        p.error(f"--series {args.series!r}: not a regular expression ({exc})")
    if args.test_slices is not None and args.test_slices < 1:
        p.error("--test-slices must be >= 1")
    if args.jobs < 1:
        p.error("-j must be >= 1")


def check_out(out):
    """DataError unless data sets can be written under ``out`` (before any is read or built)."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: --out is a file; it names the folder data sets go into")
    check_writable(out, "--out", into=True)


def main(argv=None):
    args = parse_args(argv)
    return guarded("data_prep", lambda: run(args), (DataError, ConfigError),
                   left="; no partial data set was left", where=args.out)


def run(args):
    check_out(args.out)
    cfg = DEFAULT.with_overrides(args.overrides)
    if args.input is not None:
        build_user(args, cfg)
    else:
        for name in args.dataset or DATASETS:
            build_default(name, cfg, args.out, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
