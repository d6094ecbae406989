"""Super-resolve a user's image with a trained net and write it back in the same format.

    python -m inference.upscale --in PATH --out PATH [--series REGEX]
        (--run RUN_DIR | --reference DATASET | --model CAFFEMODEL --deploy PROTOTXT)
        [--engine ENGINE] [--axis 2] [--memory-budget MB] [--gpu N] [--force]
    python -m inference.upscale --study UID --series REGEX [--pacs URL] [--out DIR] (net as above)

With ``--study``, the series come from a PACS (``--pacs``, default $MEDSR_PACS_URL; credentials
from the environment, ``data_prep.dicomweb``) and each derived series is stored back into the
study (``inference.upscale_pacs``: pull, upscale, push; a rerun stores nothing new).

With ``--series``, ``--in`` is a study tree and every series it matches is upscaled into a tree
that mirrors it (``inference.upscale_tree``: the layout, the summary, reruns); without it, a folder is
one series, as below, and a folder of folders is refused in one line that asks for ``--series``.

The factor is the run's ``config.scale`` (3, ``DEFAULT_SCALE``, for a bare --model or a manifest
without a config). Files are read and written through :mod:`data_prep.io`, whose writers say
what each format keeps (DICOM tags and geometry, NIfTI affine, NRRD and MetaImage spacing, origin
and direction, dtypes, scaling).

A slice goes as the net was trained (8-bit grey in [0, 1], LR -> MATLAB bicubic x scale -> net):
mapped to [0, 1] by a window lo..hi, upscaled, run through the net, mapped back with
``lo + y * (hi - lo)`` (not clipped to the window), rounded half away from zero and clipped only
to the output type's range. One window per file, DICOM series or volume: 0..255 for 8-bit data
(PNG, unscaled uint8 DICOM or NIfTI), as the training images; min..max for deeper grey pictures;
else the 0.5-99.5 percentile window ("mr" rule of ``data_prep.intensity``; min..max when the two
coincide) of the values after RescaleSlope/Intercept or scl_slope/scl_inter; lo..lo+1 if constant.
NaN and infinite pixels (a NaN-masked volume) are left out of the window, seen by the net as lo,
and put back on the output pixels inside them (``inference.upscale_stream.restore_nonfinite``).

8-bit colour goes as the SRCNN demo does: Y (MATLAB's rgb2ycbcr, in float) through the net, Cb,
Cr and alpha bicubic. A DICOM series folder gives a folder of the same file names; MONOCHROME1
stays MONOCHROME1 (the net sees 1 - x, bright = high as in training, and the output is flipped
back). Volumes (NIfTI, NRRD, MetaImage): ``--axis`` counts RAS+ axes as ``data_prep`` does (0
sagittal, 1 coronal, 2 axial); the slices along the file's voxel axis closest to it are upscaled,
the voxel order kept. Geometry follows imresize: new pixel n is centred on old index
(n + 0.5) / scale - 0.5.

Any image size, in bounded memory: the bicubic image is made band by band (MATLAB's imresize is
two 1-D passes; the first is kept whole, at 1/scale of the output's size, the second made for a
band of rows when the net needs it) and the net runs over tiles of a ``--memory-budget``
(``inference.net``), writing into one float64 array per file: the estimate is the same, bit for
bit, as the net on the whole bicubic image. Besides that array (8 bytes per output pixel) a
slice needs about 3 bytes per output pixel more at its peak.

tqdm progress bars (slices; tiles, for an image that takes more than a few seconds) go to
stderr when it is a terminal. Errors are one line, ``upscale: error:
...`` on stderr, exit code 2, and leave no output (temporary names, renamed at the end; a DICOM
folder is built beside --out). An existing --out is refused unless --force, and --force replaces
only an output this project wrote (its mark: ``core.outputs``, ``data_prep.io.marks``), never
the input, a folder that holds it, a run folder or anything else (docs/reliability.md).

Here: the paths and the command line; ``inference.upscale_formats`` upscales each kind of input,
``inference.upscale_stream`` the slices, in bounded memory.
"""
if __name__ == "__main__":  # Ctrl-C while Caffe and OpenCV load: no traceback (core.cli)
    from core.cli import exit_quietly_until_main
    exit_quietly_until_main()

import os
import re

os.environ.setdefault("GLOG_minloglevel", "2")  # before Caffe loads: keep errors to one line

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from core.args import command_line  # noqa: E402
from core.cli import check_writable, guarded  # noqa: E402
from core.config import DATASETS  # noqa: E402
from core.errors import DataError  # noqa: E402
from core.outputs import check_replace  # noqa: E402
from core.run_files import final_snapshot  # noqa: E402
from data_prep.io import by_name, format_of  # noqa: E402
from data_prep.io.files import list_files  # noqa: E402
from data_prep.io.formats import IMAGE_EXTS  # noqa: E402
from data_prep.io.marks import file_refusal, series_refusal  # noqa: E402
from data_prep.io.volume import upscaled_affine  # noqa: E402,F401 (API too)
from inference.tiles import DEFAULT_BUDGET_MB, ENGINES  # noqa: E402
from inference.upscale_formats import HANDLERS  # noqa: E402
from inference.runs import reference_run, run_folder, run_scale  # noqa: E402
from inference.upscale_stream import DEFAULT_SCALE  # noqa: E402


# ------------------------------------------------------------------------------ public API

def upscale_path(in_path, out_path, net, axis=2, force=False, scale=DEFAULT_SCALE, *,
                 net_name=None, used_series_numbers=()):
    """Super-resolve ``in_path`` (a picture, DICOM file or series folder, NIfTI file) x ``scale``
    into ``out_path``, in the input's format; nothing is written there unless all succeeds.

    ``net`` maps a bicubic-upscaled float image ([0, 1] scale) to its estimate of the same size
    (e.g. an ``inference.net.SRNet``, which is then given the bicubic image band by band through
    its ``estimate``: bounded memory); ``axis``: volumes only, the RAS+ axis (0 sagittal, 1 coronal,
    2 axial) whose slices are upscaled; ``force`` replaces an existing ``out_path``. Returns
    ``{"format", "slices", "window": [lo, hi], "scale", "out"}``; DataError for an unusable
    input, or an existing ``out_path`` without ``force``. DICOM only: ``net_name`` (the net's
    identity, ``inference.upscale_tree.net_id``) goes into the DerivationDescription, and the
    new SeriesNumber steps over ``used_series_numbers`` (the study's, where known).
    """
    src, dst = Path(in_path), Path(out_path)
    kind = check_io(src, dst, force)
    fmt = _format(kind)
    derived = {"net_name": net_name, "used_series_numbers": used_series_numbers} \
        if fmt.kind == "dicom" else {}
    info = HANDLERS[fmt.kind](src, dst, fmt, net, axis, scale, **derived)
    return {"format": kind, **info, "scale": scale, "out": str(dst)}


def check_io(src, dst, force=False):
    """The input's format name ("image", "dicom", "nifti" ...) or "folder", after checking that
    it exists, is supported, and that ``dst`` may be written: it does not exist, or ``force`` is
    given and it is an output this project wrote (``core.outputs.check_replace``: never the
    input, a folder that holds it, a run folder or anything else); DataError otherwise. The one
    guard of every command that writes an input's upscaled copy (inference.upscale, tools.thickslice)."""
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise DataError(f"{src}: no such file or folder")
    kind = "folder" if src.is_dir() else format_of(src).name
    if kind == "folder":
        check_series_folder(src)
    if dst.resolve() == src.resolve():
        raise DataError(f"{dst}: --out is the input; write somewhere else")
    check_writable(dst)  # before any work: a read-only or unwritable place is found out now
    if dst.exists() and not dst.is_symlink() and dst.is_dir() != (kind == "folder"):
        raise DataError(f"{dst}: exists and is a {'folder' if dst.is_dir() else 'file'}; "
                        f"the output is a {'folder' if kind == 'folder' else 'file'}")
    fmt = _format(kind)
    # Image and volume writers pick the encoding from the name: it must say the input's format.
    if fmt.kind != "dicom" and not dst.name.lower().endswith(fmt.extensions):
        raise DataError(f"{dst}: --out for a {fmt.title} file must end in "
                        f"{', '.join(fmt.extensions)}")
    extras = fmt.data_files(dst) if fmt.data_files else []
    for extra in extras:
        if extra.resolve() == src.resolve():
            raise DataError(f"{extra}: would be written with {dst.name}, and it is the input")
    own = series_refusal if kind == "folder" else (lambda path: file_refusal(fmt.name, path))
    check_replace(dst, own, force, inputs=[src])
    for extra in extras:
        check_data_file(extra, dst, own)
    return kind


def check_data_file(extra, dst, own):
    """DataError unless ``extra``, a file that writing ``dst`` writes too (a detached header's
    voxel data, the other half of a NIfTI pair), may be written: it exists only beside a ``dst``
    this project wrote (which :func:`check_io` let be replaced)."""
    if (extra.exists() or extra.is_symlink()) and (not dst.exists() or own(dst) is not None
                                                   or extra.is_symlink()):
        raise DataError(f"{extra}: already exists and would be written with {dst.name}, which is "
                        "not an output this project wrote there (move or remove it by hand)")


def check_series_folder(folder):
    """DataError for a folder of pictures: a folder is read as one DICOM series (a picture is
    upscaled on its own, one --in at a time), and each would otherwise be warned of in turn."""
    files = list_files(folder)
    pictures = [f for f in files if f.name.lower().endswith(IMAGE_EXTS)]
    if files and len(pictures) == len(files):
        raise DataError(f"{folder}: a folder of pictures ({pictures[0].name}, ...) is not a DICOM series: "
                        f"upscale each picture with its own --in")


def _format(kind):
    """The registry row for a ``check_io`` kind (a folder is read as one DICOM series)."""
    return by_name("dicom" if kind == "folder" else kind)


# ---------------------------------------------------------------------------------- CLI

def resolve_model(run=None, model=None, deploy=None):
    """(deploy prototxt, caffemodel): given directly, or the last snapshot of a run directory
    and its deploy net."""
    return resolve_run(run, model, deploy)[:2]


def resolve_run(run=None, model=None, deploy=None):
    """(deploy prototxt, caffemodel, scale): :func:`resolve_model`, plus the factor the net was
    trained for: the run's ``config.scale``, or ``DEFAULT_SCALE`` without a run (or a run whose
    manifest has no config). DataError for a scale that is not a positive integer."""
    if run is None:
        return Path(deploy), Path(model), DEFAULT_SCALE
    manifest, deploy, caffemodel = final_snapshot(run)
    return deploy, caffemodel, run_scale(run, manifest)


def parse_args(argv):
    p = command_line("inference.upscale", description="Super-resolve an image with a trained SRCNN "
                                                 "and write it back in the same format.")
    p.add_argument("--in", dest="input", type=Path,
                   help="PNG/TIFF/BMP, DICOM file or series folder, NIfTI (.nii, .nii.gz, or a .hdr/.img "
                        "pair), NRRD (.nrrd, .nhdr) or MetaImage (.mha, .mhd)")
    p.add_argument("--out", type=Path,
                   help="output file (a folder for a DICOM folder or --series); same format "
                        "as --in. With --study: a folder that keeps the derived series too")
    p.add_argument("--study", metavar="UID",
                   help="upscale series of this study (StudyInstanceUID) on the PACS, given "
                        "with --series, and store each derived series into it "
                        "(inference/upscale_pacs.py); no --in")
    p.add_argument("--pacs", metavar="URL",
                   help="with --study: the PACS, http://host:port (default $MEDSR_PACS_URL; "
                        "credentials from MEDSR_PACS_CREDENTIALS, never here)")
    p.add_argument("--series", metavar="REGEX",
                   help="--in is a study tree (any depth): upscale every series whose "
                        "SeriesDescription (else ProtocolName; a volume's file name) matches "
                        "REGEX (case-insensitive; '.' for all) into a tree under --out that "
                        "mirrors it; a rerun skips the series finished (inference/upscale_tree.py)")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--run", type=Path,
                       help="run directory: its last snapshot, deploy net and scale")
    model.add_argument("--model", type=Path, help=f"a caffemodel (with --deploy; x{DEFAULT_SCALE})")
    model.add_argument("--reference", metavar="DATASET",
                       help="the committed long-schedule weights models/reference/DATASET/ "
                            f"({', '.join(DATASETS)}): no training needed")
    p.add_argument("--deploy", type=Path, help="the deploy prototxt of --model")
    p.add_argument("--engine", choices=ENGINES, default="caffe",
                   help="what runs the net (inference.net.SRNet; onnx: ONNX Runtime on the graph "
                        "make export writes)")
    p.add_argument("--axis", type=int, choices=(0, 1, 2), default=2,
                   help="volumes: RAS+ axis to slice along, as in data_prep: 0 sagittal, "
                        "1 coronal, 2 axial (default); the file's closest voxel axis is used")
    p.add_argument("--memory-budget", type=float, default=DEFAULT_BUDGET_MB, metavar="MB",
                   help="memory for one tile of the net, in MB (default %(default)g); larger "
                        "images run tile by tile with the same result")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out this project wrote (docs/reliability.md)")
    p.add_argument("--gpu", type=int, metavar="N",
                   help="run the net on GPU N (engine caffe; a CUDA build: make setup GPU=1)")
    args = p.parse_args(argv)
    check_where(p, args)
    if args.gpu is not None and args.engine != "caffe":
        p.error(f"--gpu needs --engine caffe (the {args.engine} engine runs on the CPU)")
    if args.model is not None and args.deploy is None:
        p.error("--model needs --deploy")
    if args.run is not None and args.deploy is not None:
        p.error("--deploy goes with --model (--run uses the run's deploy.prototxt)")
    if not args.memory_budget > 0:
        p.error("--memory-budget must be a positive number of MB")
    if args.series is not None:
        try:
            re.compile(args.series)
        except re.error as exc:
            p.error(f"--series {args.series!r}: not a regular expression ({exc})")
    if args.reference is not None:
        args.run = reference_run(args.reference, p)
    elif args.run is not None:
        args.run = run_folder(args.run)
    return args


def check_where(p, args):
    """Where the series come from and go: --in and --out, or --study (a PACS) with --series."""
    if args.study is None:
        if args.pacs is not None:
            p.error("--pacs goes with --study UID (the study whose series are upscaled)")
        missing = [name for name, value in (("--in", args.input), ("--out", args.out)) if value is None]
        if missing:
            p.error(f"the following arguments are required: {', '.join(missing)} (or --study UID "
                    "--series REGEX for a study on a PACS)")
        return
    if args.input is not None:
        p.error("--study takes the series from the PACS: no --in")
    if args.series is None:
        p.error("--study needs --series REGEX: the series of the study to upscale ('.' for all)")


def main(argv=None):
    args = parse_args(argv)
    if args.study is not None:
        from inference.upscale_pacs import run_pacs
        return guarded("upscale", lambda: run_pacs(args),
                       left="; the series stored so far are kept, none half-stored")
    if args.series is not None:
        return guarded("upscale", lambda: run_tree(args),
                       left="; the series finished so far are kept (a rerun skips them)")
    return guarded("upscale", lambda: run(args), left="; no output was written")


def check_not_a_tree(src):
    """DataError for a folder without DICOM files of its own but with folders in it (a study
    tree, read with --series; a folder is otherwise one series, its subfolders not searched)."""
    src = Path(src)
    if not src.is_dir() or any(format_of_or_none(f) in ("dicom", "image") for f in list_files(src)):
        return  # a series folder, or a folder of pictures (check_series_folder says so)
    if any(d.is_dir() and not d.name.startswith(".") for d in src.iterdir()):
        raise DataError(f"{src}: a folder of folders (a study tree?): give --series REGEX "
                        "(SERIES= with make) to upscale each series it matches, e.g. --series "
                        "'t2_tse' or --series . for all")


def format_of_or_none(path):
    """The format's kind of ``path`` ("dicom", "image", "volume"), None when unknown."""
    try:
        from data_prep.io import sniff
        name = sniff(path)
    except DataError:
        return None
    return by_name(name).kind if name else None


def load_net(args):
    """(SRNet, scale, settings) of the command line's net; settings: what says which net wrote
    an output (inference.upscale_tree's key). The net's ``identity`` (``upscale_tree.net_id``)
    goes into the DICOM outputs (``inference.upscale_formats.derivation_note``)."""
    deploy, caffemodel, scale = resolve_run(args.run, args.model, args.deploy)
    from inference.net import SRNet  # imports Caffe: only once the paths are known good
    from core.device import use_device
    use_device(args.gpu)
    net = SRNet(deploy, caffemodel, engine=args.engine, budget_mb=args.memory_budget)
    from inference.upscale_tree import net_id
    net.identity = net_id(deploy, caffemodel)  # into each DICOM output's DerivationDescription
    return net, scale, (deploy, caffemodel)


def run(args):
    check_not_a_tree(args.input)
    check_io(args.input, args.out, args.force)  # before the net: fail fast on bad paths
    net, scale, _ = load_net(args)
    try:
        info = upscale_path(args.input, args.out, net, axis=args.axis, force=args.force,
                            scale=scale)
    except MemoryError:
        raise DataError("out of memory (try a smaller --memory-budget)") from None
    lo, hi = info["window"]
    print(f"upscale: {info['slices']} slice(s) x{info['scale']}, window {lo:.6g}..{hi:.6g} "
          f"-> {info['out']}")
    return 0


def run_tree(args):
    """--series: every matching series of the tree --in into --out (inference.upscale_tree); 2 when
    a series failed (the summary names it), the others being written."""
    from core.locks import exclusive, lock_beside
    from inference import upscale_tree as tree
    from inference.upscale_formats import upscale_series_files
    tree.check_tree_out(args.input, args.out)  # before the net: fail fast on bad paths
    deploy, caffemodel, scale = resolve_run(args.run, args.model, args.deploy)
    settings = {"net": tree.net_id(deploy, caffemodel), "scale": scale, "engine": args.engine,
                "axis": args.axis}
    loaded = {}

    def upscale_one(job):
        if "net" not in loaded:  # once, and only once the tree is planned and free to write
            loaded["net"] = load_net(args)[0]
        if job.series.kind == "volume":
            return upscale_path(job.series.paths[0], job.out, loaded["net"], axis=args.axis,
                                force=args.force, scale=scale)
        return upscale_series_files(job.series.paths, job.out, loaded["net"], scale)

    with exclusive(lock_beside(args.out), "upscale --series", args.out):
        summary = tree.upscale_tree(args.input, args.out, args.series, settings,
                                    upscale_one, force=args.force)
    for line in tree.summary_lines(summary):
        print(line)
    bad = tree.failed(summary)
    if bad:
        print(f"upscale: error: {len(bad)} of {len(summary['jobs'])} series failed (named "
              f"above); the others are in {args.out}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
