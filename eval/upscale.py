"""Super-resolve a user's image with a trained net and write it back in the same format.

    python -m eval.upscale --in PATH --out PATH
        (--run RUN_DIR | --model CAFFEMODEL --deploy PROTOTXT)
        [--engine caffe|opencv] [--axis 2] [--memory-budget MB] [--force]

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
(``eval.infer``), writing into one float64 array per file: the estimate is the same, bit for
bit, as the net on the whole bicubic image. Besides that array (8 bytes per output pixel) a
slice needs about 3 bytes per output pixel more at its peak.

tqdm progress bars (slices; tiles, for an image that takes more than a few seconds) go to
stderr when it is a terminal. Errors are one line, ``upscale: error:
...`` on stderr, exit code 2, and leave no output (temporary names, renamed at the end; a DICOM
folder is built beside --out). An existing --out is refused unless --force.
"""
import os

os.environ.setdefault("GLOG_minloglevel", "2")  # before Caffe loads: keep errors to one line

import argparse  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from core.atomic import replace_dir, temp_dir_beside  # noqa: E402
from core.errors import DataError  # noqa: E402
from core.run_files import final_snapshot  # noqa: E402
from data_prep.intensity import DEFAULT_PERCENTILES, check_numeric, percentile_window  # noqa: E402
from data_prep.io.files import chunks  # noqa: E402
from data_prep.io import by_name, format_of  # noqa: E402
from data_prep.io import dicom, images  # noqa: E402
from data_prep.io.dicom_series import group_series, series_files  # noqa: E402
from data_prep.io.volume import upscaled_affine, voxel_axis  # noqa: E402,F401 (API too)
from data_prep.matlab import imresize  # noqa: E402

DEFAULT_SCALE = 3  # the paper's factor: a caffemodel given without its run says nothing of its own
DEFAULT_BUDGET_MB = 768  # per tile of the net (eval.infer.DEFAULT_BUDGET_MB; not imported: Caffe)
MIN_SIDE = 2  # a slice thinner than this is 1-D: there is nothing to super-resolve
_YCBCR = np.array([[65.481, 128.553, 24.966],
                   [-37.797, -74.203, 112.0],
                   [112.0, -93.786, -18.214]]) / 255.0  # MATLAB rgb2ycbcr, [0, 1] scale
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0]) / 255.0


# ------------------------------------------------------------------------------ public API

def upscale_path(in_path, out_path, net, axis=2, force=False, scale=DEFAULT_SCALE):
    """Super-resolve ``in_path`` (a picture, DICOM file or series folder, NIfTI file) x ``scale``
    into ``out_path``, in the input's format; nothing is written there unless all succeeds.

    ``net`` maps a bicubic-upscaled float image ([0, 1] scale) to its estimate of the same size
    (e.g. an ``eval.infer.SRNet``, which is then given the bicubic image band by band through
    its ``estimate``: bounded memory); ``axis``: volumes only, the RAS+ axis (0 sagittal, 1 coronal,
    2 axial) whose slices are upscaled; ``force`` replaces an existing ``out_path``. Returns
    ``{"format", "slices", "window": [lo, hi], "scale", "out"}``; DataError for an unusable
    input, or an existing ``out_path`` without ``force``.
    """
    src, dst = Path(in_path), Path(out_path)
    kind = check_io(src, dst, force)
    fmt = _format(kind)
    info = _HANDLERS[fmt.kind](src, dst, fmt, net, axis, scale)
    return {"format": kind, **info, "scale": scale, "out": str(dst)}


def check_io(src, dst, force=False):
    """The input's format name ("image", "dicom", "nifti" ...) or "folder", after checking that
    it exists, is supported, and that ``dst`` may be written; DataError otherwise."""
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise DataError(f"{src}: no such file or folder")
    kind = "folder" if src.is_dir() else format_of(src).name
    if dst.resolve() == src.resolve():
        raise DataError(f"{dst}: --out is the input; write somewhere else")
    if dst.exists() or dst.is_symlink():
        if not force:
            raise DataError(f"{dst}: already exists (add --force to replace it)")
        if dst.is_dir() != (kind == "folder"):
            raise DataError(f"{dst}: exists and is a {'folder' if dst.is_dir() else 'file'}; "
                            f"the output is a {'folder' if kind == 'folder' else 'file'}")
    fmt = _format(kind)
    # Image and volume writers pick the encoding from the name: it must say the input's format.
    if fmt.kind != "dicom" and not dst.name.lower().endswith(fmt.extensions):
        raise DataError(f"{dst}: --out for a {fmt.title} file must end in "
                        f"{', '.join(fmt.extensions)}")
    # A detached header (.mhd, .nhdr) also writes its voxel data beside it.
    for extra in (fmt.data_files(dst) if fmt.data_files else []):
        if extra.resolve() == src.resolve() or (extra.exists() and not force):
            raise DataError(f"{extra}: already exists and would be written with {dst.name} "
                            "(add --force to replace it)")
    return kind


def upscale_slice(net, x01, scale=DEFAULT_SCALE, out=None):
    """The net's x ``scale`` estimate (float64, [0, 1] scale) of one 2-D slice in [0, 1] scale,
    written into ``out`` if given. A net with an ``estimate`` method (``SRNet``) gets the
    bicubic image band by band (:func:`bicubic_rows`), any other callable the whole of it."""
    x = np.asarray(x01, dtype=np.float64)
    estimate = getattr(net, "estimate", None)
    if estimate is not None:
        rows, shape = bicubic_rows(x, scale)
        return estimate(rows, shape, out=out)
    y = np.asarray(net(imresize(x, scale)), dtype=np.float64)
    if out is None:
        return y
    out[...] = y
    return out


def bicubic_rows(x, scale=DEFAULT_SCALE):
    """(``rows``, shape) of ``imresize(x, scale)`` without making it whole: ``rows(a, b)`` gives
    its rows a..b-1, equal bit for bit to those of the whole image.

    MATLAB's imresize is separable and resizes along rows first (equal scales: rows first), so
    it is ``imresize`` with output_shape along one axis at a time (the other's scale 1: an exact
    copy). The first pass is done once, column by column (H x scale by W: 1/scale of the
    output), the second for the rows asked."""
    height, width = x.shape
    out_rows, out_cols = math.ceil(scale * height), math.ceil(scale * width)
    first = np.empty((out_rows, width))
    step = max(1, (1 << 21) // out_rows)
    for c in range(0, width, step):
        part = x[:, c:c + step]
        first[:, c:c + step] = imresize(part, output_shape=(out_rows, part.shape[1]))

    def rows(a, b):
        return imresize(first[a:b], output_shape=(b - a, out_cols))
    return rows, (out_rows, out_cols)


def upscale_stack(net, slices, window, invert=None, desc="upscale", scale=DEFAULT_SCALE,
                  out=None, progress=None):
    """x ``scale`` estimates of 2-D slices, in their own intensity scale (float64, neither
    clipped nor rounded), all mapped through one ``window`` (lo, hi). ``invert[i]`` flips slice
    i inside the window for the net (MONOCHROME1), and flips the estimate back. Written into
    ``out[i]`` (float64 arrays of the upscaled size) if given, else into new arrays; returns
    them. ``progress``: a tqdm bar to advance instead of a bar of its own."""
    lo, hi = window
    invert = [False] * len(slices) if invert is None else invert
    bar = progress if progress is not None else tqdm(total=len(slices), desc=desc, unit="slice",
                                                     disable=None)
    results = []
    try:
        for i, (s, flip) in enumerate(zip(slices, invert)):
            x = (np.asarray(s, dtype=np.float64) - lo) / (hi - lo)
            y = upscale_slice(net, 1.0 - x if flip else x, scale,
                              out=None if out is None else out[i])
            for piece in chunks(y.shape):  # lo + (1 - y or y) * (hi - lo), in place
                part = y[piece]
                if flip:
                    np.subtract(1.0, part, out=part)
                part *= hi - lo
                part += lo
            results.append(y)
            bar.update()
    finally:
        if progress is None:
            bar.close()
    return results if out is None else out


def upscaled_shape(shape, scale=DEFAULT_SCALE):
    """The in-plane size imresize gives a (rows, cols) slice at ``scale``."""
    return tuple(math.ceil(scale * n) for n in shape)


def _output_array(shape, source):
    """A float64 array for the estimates; DataError (one line, before any work) when it does
    not fit in the memory this machine has available."""
    need = 8 * math.prod(shape)
    available = _available_memory()
    if available is not None and need > available:
        raise DataError(f"{source}: the {'x'.join(map(str, shape))} output needs "
                        f"{_size(need)} of memory (float64); {_size(available)} is available")
    try:
        return np.empty(shape)
    except MemoryError:
        raise DataError(f"{source}: not enough memory for a {'x'.join(map(str, shape))} "
                        f"output ({_size(need)})") from None


def _size(n):
    """Bytes for a message: 86 kB, 12 MB, 1.0 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if unit == "GB" else f"{n / scale:.0f} {unit}"
    return f"{n} bytes"


def _available_memory():
    """MemAvailable from /proc/meminfo in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# ---------------------------------------------------------------------------- helpers

def _format(kind):
    """The registry row for a ``check_io`` kind (a folder is read as one DICOM series)."""
    return by_name("dicom" if kind == "folder" else kind)


def _window(values, eight_bit, percentiles=DEFAULT_PERCENTILES):
    """(lo, hi): 0..255 for 8-bit data, else the percentile window (min..max if it is empty);
    never empty, so that (x - lo) / (hi - lo) is defined."""
    if eight_bit:
        return 0.0, 255.0
    lo, hi, _ = percentile_window(values, percentiles)
    lo, hi = (lo, hi) if hi > lo else (lo, lo + 1.0)
    if not np.isfinite(hi - lo) or not hi - lo > 0:  # +-1e308 data, or 1e20 + 1 == 1e20
        raise DataError(f"intensity window {lo:g}..{hi:g} cannot be mapped to the net's 0..1 "
                        "range in floating point")
    return lo, hi


def _check_plane(shape, source):
    """DataError for an in-plane size that is empty or 1-D."""
    if min(shape) < MIN_SIDE:
        raise DataError(f"{source}: slices of {'x'.join(map(str, shape))} pixels are "
                        f"{'empty' if min(shape) == 0 else '1-D'}; need at least "
                        f"{MIN_SIDE}x{MIN_SIDE}")


# ------------------------------------------------------------------------------- images

def _upscale_image(src, dst, fmt, net, axis, scale):
    """2-D picture: grey through the net; 8-bit colour as Y (net) + Cb, Cr (bicubic)."""
    img = fmt.read(src)
    images.check_colour(img, src)
    check_numeric(img, src)
    _check_plane(img.shape[:2], src)
    if img.ndim == 3:
        window = (0.0, 255.0)
        out = _upscale_colour(img, net, scale)
    else:
        # 8-bit as the training images; deeper images use their full range (min..max).
        window = _window(img, img.dtype == np.uint8, percentiles=(0, 100))
        out = _output_array((1,) + upscaled_shape(img.shape, scale), src)
        out = upscale_stack(net, [img], window, scale=scale, out=out)[0]
    fmt.write(dst, out, img.dtype)
    return {"slices": 1, "window": list(window)}


def _upscale_colour(bgr, net, scale):
    """8-bit BGR(A) x scale: Y through the net, Cb/Cr (and alpha) bicubic; BGR(A), 0..255 float."""
    x = bgr.astype(np.float64) / 255.0
    ycc = x[..., 2::-1] @ _YCBCR.T + _YCBCR_OFFSET
    y = upscale_stack(net, [ycc[..., 0]], (0.0, 1.0), scale=scale)[0]
    rest = imresize(np.concatenate([ycc[..., 1:], x[..., 3:]], axis=2), scale)
    rgb = (np.dstack([y, rest[..., :2]]) - _YCBCR_OFFSET) @ np.linalg.inv(_YCBCR).T
    return np.dstack([rgb[..., ::-1], rest[..., 2:]]) * 255.0


# -------------------------------------------------------------------------------- DICOM

def _upscale_dicom(src, dst, fmt, net, axis, scale):
    """A DICOM file (all its frames) into a file, or a series folder into a folder of the same
    file names (built in a temporary folder, renamed at the end)."""
    if not src.is_dir():
        return _upscale_series([(src, fmt.read(src))], fmt, net, scale, lambda path: dst)
    items = [(f, fmt.read(f)) for f in series_files(src)]
    tmp = temp_dir_beside(dst)
    try:
        info = _upscale_series(items, fmt, net, scale, lambda path: tmp / path.name)
        replace_dir(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _upscale_series(items, fmt, net, scale, out_path):
    """Upscale [(path, dataset)] of one series with one window, and write each file to
    ``out_path(path)`` in one new series, file by file (one file's estimates in memory)."""
    series = group_series(items)
    if len(series) > 1:
        raise DataError(f"{items[0][0].parent}: holds {len(series)} DICOM series; "
                        "give a folder with one series")
    values = [dicom.linear_values(ds, path) for path, ds in items]
    for (path, _), v in zip(items, values):
        check_numeric(v, path)
        _check_plane(v.shape[1:], path)
    flat = np.concatenate([v.ravel() for v in values])
    eight_bit = all(dicom.stored_dtype(ds, p) == np.uint8 and dicom.rescale(ds, p) == (1.0, 0.0)
                    for p, ds in items)
    window = _window(flat, eight_bit)
    del flat
    uid = dicom.new_series_uid()
    note = f"SRCNN x{scale} super-resolution, window {window[0]:.6g}..{window[1]:.6g}"
    total = sum(len(v) for v in values)
    with tqdm(total=total, desc="upscale", unit="slice", disable=None) as bar:
        for k, ((path, ds), v) in enumerate(zip(items, values)):
            out = _output_array((len(v),) + upscaled_shape(v.shape[1:], scale), path)
            flip = [dicom.is_monochrome1(ds)] * len(v)
            upscale_stack(net, v, window, flip, scale=scale, out=out, progress=bar)
            values[k] = None  # this file's input is no longer needed
            fmt.write(out_path(path), ds, out, scale, series_uid=uid, description=note)
            del out
    return {"slices": total, "window": list(window)}


# ------------------------------------------------------------------------------ volumes

def _upscale_volume(src, dst, fmt, net, axis, scale):
    """Every slice along the voxel axis closest to RAS+ axis ``axis``, x ``scale`` in-plane."""
    vol = fmt.read(src)
    values = check_numeric(vol.values, src).astype(np.float64)
    if values.ndim >= 3:
        axis = voxel_axis(vol.affine, axis, src)
    planes = [d for d in range(min(values.ndim, 3)) if d != axis]
    if values.ndim < 2 or len(planes) != 2:
        raise DataError(f"{src}: {fmt.title} shape {values.shape} has no 2-D slices along "
                        f"axis {axis}")
    _check_plane([values.shape[d] for d in planes], src)
    window = _window(values, eight_bit=vol.stored == np.uint8 and vol.scaling == (1.0, 0.0))
    moved = np.moveaxis(values, planes, (-2, -1))
    frames = moved.reshape((-1,) + moved.shape[-2:])
    out = _output_array(moved.shape[:-2] + upscaled_shape(moved.shape[-2:], scale), src)
    upscale_stack(net, frames, window, scale=scale, out=out.reshape((-1,) + out.shape[-2:]))
    del values, moved, frames
    fmt.write(dst, vol, np.moveaxis(out, (-2, -1), planes), planes, scale)
    return {"slices": math.prod(out.shape[:-2]), "window": list(window)}


_HANDLERS = {"image": _upscale_image, "dicom": _upscale_dicom, "volume": _upscale_volume}


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
    config = manifest.get("config")
    scale = config.get("scale", DEFAULT_SCALE) if isinstance(config, dict) else DEFAULT_SCALE
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise DataError(f"{run}: manifest.json config scale {scale!r} is not a positive integer")
    return deploy, caffemodel, scale


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m eval.upscale",
                                description="Super-resolve an image with a trained SRCNN "
                                            "and write it back in the same format.")
    p.add_argument("--in", dest="input", type=Path, required=True,
                   help="PNG/TIFF/BMP, DICOM file or series folder, NIfTI (.nii, .nii.gz), NRRD "
                        "(.nrrd, .nhdr) or MetaImage (.mha, .mhd)")
    p.add_argument("--out", type=Path, required=True,
                   help="output file (a folder for a DICOM folder); same format as --in")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--run", type=Path,
                       help="run directory: its last snapshot, deploy net and scale")
    model.add_argument("--model", type=Path, help=f"a caffemodel (with --deploy; x{DEFAULT_SCALE})")
    p.add_argument("--deploy", type=Path, help="the deploy prototxt of --model")
    p.add_argument("--engine", choices=("caffe", "opencv"), default="caffe")
    p.add_argument("--axis", type=int, choices=(0, 1, 2), default=2,
                   help="volumes: RAS+ axis to slice along, as in data_prep: 0 sagittal, "
                        "1 coronal, 2 axial (default); the file's closest voxel axis is used")
    p.add_argument("--memory-budget", type=float, default=DEFAULT_BUDGET_MB, metavar="MB",
                   help="memory for one tile of the net, in MB (default %(default)g); larger "
                        "images run tile by tile with the same result")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)
    if args.model is not None and args.deploy is None:
        p.error("--model needs --deploy")
    if args.run is not None and args.deploy is not None:
        p.error("--deploy goes with --model (--run uses the run's deploy.prototxt)")
    if not args.memory_budget > 0:
        p.error("--memory-budget must be a positive number of MB")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        check_io(args.input, args.out, args.force)  # before the net: fail fast on bad paths
        deploy, caffemodel, scale = resolve_run(args.run, args.model, args.deploy)
        from eval.infer import SRNet  # imports Caffe: only once the paths are known good
        net = SRNet(deploy, caffemodel, engine=args.engine, budget_mb=args.memory_budget)
        info = upscale_path(args.input, args.out, net, axis=args.axis, force=args.force,
                            scale=scale)
    except DataError as e:
        print(f"upscale: error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print("upscale: error: out of memory (try a smaller --memory-budget); no output was "
              "written", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("upscale: interrupted; no output was written", file=sys.stderr)
        return 130
    lo, hi = info["window"]
    print(f"upscale: {info['slices']} slice(s) x{info['scale']}, window {lo:.6g}..{hi:.6g} "
          f"-> {info['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
