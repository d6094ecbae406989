"""Super-resolve a user's image with a trained net and write it back in the same format.

    python -m eval.upscale --in PATH --out PATH
        (--run RUN_DIR | --model CAFFEMODEL --deploy PROTOTXT)
        [--engine caffe|opencv] [--axis 2] [--force]

The factor is the run's ``config.scale`` (3, ``DEFAULT_SCALE``, for a bare --model or a manifest
without a config). Files are read and written through :mod:`data_prep.io`, whose writers say
what each format keeps (DICOM tags and geometry, NIfTI affine, dtypes, scaling).

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
back). NIfTI: ``--axis`` counts RAS+ axes as ``data_prep`` does (0 sagittal, 1 coronal, 2 axial);
the slices along the file's voxel axis closest to it are upscaled, the voxel order kept. Geometry
follows imresize: new pixel n is centred on old index (n + 0.5) / scale - 0.5.

A tqdm progress bar goes to stderr when it is a terminal. Errors are one line, ``upscale: error:
...`` on stderr, exit code 2, and leave no output (temporary names, renamed at the end; a DICOM
folder is built beside --out). An existing --out is refused unless --force.
"""
import os

os.environ.setdefault("GLOG_minloglevel", "2")  # before Caffe loads: keep errors to one line

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from core.atomic import replace_dir, temp_dir_beside  # noqa: E402
from core.errors import DataError  # noqa: E402
from core.run_files import final_snapshot  # noqa: E402
from data_prep.intensity import DEFAULT_PERCENTILES, check_numeric, percentile_window  # noqa: E402
from data_prep.io import by_name, format_of  # noqa: E402
from data_prep.io import dicom, images  # noqa: E402
from data_prep.io.dicom_series import group_series, series_files  # noqa: E402
from data_prep.io.volume import upscaled_affine, voxel_axis  # noqa: E402,F401 (API too)
from data_prep.matlab import imresize  # noqa: E402

DEFAULT_SCALE = 3  # the paper's factor: a caffemodel given without its run says nothing of its own
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
    (e.g. an ``eval.infer.SRNet``); ``axis``: volumes only, the RAS+ axis (0 sagittal, 1 coronal,
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
    return kind


def upscale_slice(net, x01, scale=DEFAULT_SCALE):
    """The net's x ``scale`` estimate (float64, [0, 1] scale) of one 2-D slice in [0, 1] scale."""
    return np.asarray(net(imresize(np.asarray(x01, dtype=np.float64), scale)), dtype=np.float64)


def upscale_stack(net, slices, window, invert=None, desc="upscale", scale=DEFAULT_SCALE):
    """x ``scale`` estimates of 2-D slices, in their own intensity scale (float64, neither
    clipped nor rounded), all mapped through one ``window`` (lo, hi). ``invert[i]`` flips slice
    i inside the window for the net (MONOCHROME1), and flips the estimate back."""
    lo, hi = window
    invert = [False] * len(slices) if invert is None else invert
    out = []
    for s, flip in zip(tqdm(slices, desc=desc, unit="slice", disable=None), invert):
        x = (np.asarray(s, dtype=np.float64) - lo) / (hi - lo)
        y = upscale_slice(net, 1.0 - x if flip else x, scale)
        out.append(lo + (1.0 - y if flip else y) * (hi - lo))
    return out


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
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


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
        out = upscale_stack(net, [img], window, scale=scale)[0]
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
    ``out_path(path)`` in one new series."""
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
    frames = [f for v in values for f in v]
    invert = [dicom.is_monochrome1(ds) for (_, ds), v in zip(items, values) for _ in v]
    upscaled = iter(upscale_stack(net, frames, window, invert, scale=scale))
    uid = dicom.new_series_uid()
    note = f"SRCNN x{scale} super-resolution, window {window[0]:.6g}..{window[1]:.6g}"
    for (path, ds), v in zip(items, values):
        fmt.write(out_path(path), ds, np.stack([next(upscaled) for _ in v]), scale,
                  series_uid=uid, description=note)
    return {"slices": len(frames), "window": list(window)}


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
    frames = upscale_stack(net, list(moved.reshape((-1,) + moved.shape[-2:])), window,
                           scale=scale)
    out = np.stack(frames).reshape(moved.shape[:-2] + frames[0].shape)
    fmt.write(dst, vol, np.moveaxis(out, (-2, -1), planes), planes, scale)
    return {"slices": len(frames), "window": list(window)}


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
                   help="PNG/TIFF/BMP, DICOM file or series folder, or NIfTI (.nii, .nii.gz)")
    p.add_argument("--out", type=Path, required=True,
                   help="output file (a folder for a DICOM folder); same format as --in")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--run", type=Path,
                       help="run directory: its last snapshot, deploy net and scale")
    model.add_argument("--model", type=Path, help=f"a caffemodel (with --deploy; x{DEFAULT_SCALE})")
    p.add_argument("--deploy", type=Path, help="the deploy prototxt of --model")
    p.add_argument("--engine", choices=("caffe", "opencv"), default="caffe")
    p.add_argument("--axis", type=int, choices=(0, 1, 2), default=2,
                   help="NIfTI: RAS+ axis to slice along, as in data_prep: 0 sagittal, 1 coronal, "
                        "2 axial (default); the file's closest voxel axis is used")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)
    if args.model is not None and args.deploy is None:
        p.error("--model needs --deploy")
    if args.run is not None and args.deploy is not None:
        p.error("--deploy goes with --model (--run uses the run's deploy.prototxt)")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        check_io(args.input, args.out, args.force)  # before the net: fail fast on bad paths
        deploy, caffemodel, scale = resolve_run(args.run, args.model, args.deploy)
        from eval.infer import SRNet  # imports Caffe: only once the paths are known good
        net = SRNet(deploy, caffemodel, engine=args.engine)
        info = upscale_path(args.input, args.out, net, axis=args.axis, force=args.force,
                            scale=scale)
    except DataError as e:
        print(f"upscale: error: {e}", file=sys.stderr)
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
