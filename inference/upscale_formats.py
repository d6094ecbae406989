"""How ``inference.upscale`` upscales each kind of input: a 2-D picture (8-bit colour as Y through the
net, Cb/Cr bicubic), a DICOM file or series folder, a volume (NIfTI, NRRD, MetaImage); each file,
series or volume through one intensity window (:func:`_window`). ``HANDLERS`` maps a format's
kind to its handler, ``handler(src, dst, fmt, net, axis, scale)``; the DICOM one takes
``net_name`` (which net: ``inference.upscale_tree.net_id``, written into the DerivationDescription
so that a PACS run finds its own earlier output, :func:`same_method`) and ``used_series_numbers``
(the study's, which the new SeriesNumber steps over) as keywords too.
"""
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.atomic import atomic_dir
from core.errors import DataError, warn
from data_prep.intensity import DEFAULT_PERCENTILES, check_numeric, percentile_window
from data_prep.io import by_name, dicom, images
from data_prep.io.dicom_series import (check_same_size, check_stack, group_series,
                                       series_files, sort_series)
from data_prep.io.marks import write_marked_picture
from data_prep.io.volume import voxel_axis
from data_prep.matlab import imresize
from inference.upscale_stream import output_array, upscale_stack, upscaled_shape

MIN_SIDE = 2  # a slice thinner than this is 1-D: there is nothing to super-resolve
_YCBCR = np.array([[65.481, 128.553, 24.966],
                   [-37.797, -74.203, 112.0],
                   [112.0, -93.786, -18.214]]) / 255.0  # MATLAB rgb2ycbcr, [0, 1] scale
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0]) / 255.0


# ---------------------------------------------------------------------------- helpers

NET_WORDS = "; net sha256 "  # what precedes the net's identity in a DerivationDescription


def derivation_note(scale, what, net_name=None):
    """A DICOM output's DerivationDescription (and its Contribution Description): the method,
    the factor, ``what`` (the window, or how colour went), the net when known."""
    note = f"SRCNN x{scale} super-resolution{what}"
    return note + (f"{NET_WORDS}{net_name}" if net_name else "")


def same_method(description, scale, net_name):
    """Whether a DerivationDescription (:func:`derivation_note`) says: x``scale`` by the net
    ``net_name``."""
    description = str(description or "")
    return description.startswith(f"SRCNN x{scale} super-resolution") and \
        description.endswith(f"{NET_WORDS}{net_name}")


def _window(values, eight_bit, percentiles=DEFAULT_PERCENTILES):
    """(lo, hi): 0..255 for 8-bit data, else the percentile window (min..max if it is empty);
    never empty, so that (x - lo) / (hi - lo) is defined."""
    if eight_bit:
        return 0.0, 255.0
    values = np.asarray(values)
    if values.dtype.kind == "f" and not np.isfinite(values).all():  # a NaN-masked volume
        values = values[np.isfinite(values)]
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
    """2-D picture: grey through the net; 8-bit colour as Y (net) + Cb, Cr (bicubic). A
    multi-page TIFF: every page, with one window (:func:`_upscale_pages`)."""
    if images.page_count(src) > 1:
        return _upscale_pages(src, dst, net, scale)
    img = fmt.read(src)
    images.check_colour(img, src)
    check_numeric(img, src, nonfinite=True)
    _check_plane(img.shape[:2], src)
    images.check_writable(dst, img.dtype)  # before the work, not after it
    if img.ndim == 3:
        window = (0.0, 255.0)
        out = _upscale_colour(img, net, scale)
    else:
        # 8-bit as the training images; deeper images use their full range (min..max).
        window = _window(img, img.dtype == np.uint8, percentiles=(0, 100))
        out = output_array((1,) + upscaled_shape(img.shape, scale), src)
        out = upscale_stack(net, [img], window, scale=scale, out=out)[0]
    write_marked_picture(dst, lambda path: fmt.write(path, out, img.dtype), f"upscale x{scale}")
    return {"slices": 1, "window": list(window)}


def _upscale_pages(src, dst, net, scale):
    """A multi-page grey TIFF as a stack of slices: one window over all pages (0..255 for 8
    bits, else min..max, as one picture), written as a multi-page TIFF of the same type."""
    pages = images.read_pages(src)
    first = pages[0]
    if any(p.shape != first.shape or p.dtype != first.dtype for p in pages) or first.ndim != 2:
        raise DataError(f"{src}: a multi-page TIFF is upscaled as a stack of grey pages of one "
                        f"size and type (here: {sorted({(p.shape, str(p.dtype)) for p in pages})})")
    for page in pages:
        check_numeric(page, src, nonfinite=True)
    _check_plane(first.shape, src)
    images.check_pages_writable(dst, first.dtype)  # before the work, not after it
    window = _window(np.stack(pages), first.dtype == np.uint8, percentiles=(0, 100))
    out = output_array((len(pages),) + upscaled_shape(first.shape, scale), src)
    upscale_stack(net, pages, window, scale=scale, out=out)
    write_marked_picture(dst, lambda path: images.write_pages(path, out, first.dtype),
                         f"upscale x{scale}")
    return {"slices": len(pages), "window": list(window)}


def _upscale_colour(bgr, net, scale):
    """8-bit BGR(A) x scale: Y through the net, Cb/Cr (and alpha) bicubic; BGR(A), 0..255 float."""
    x = bgr.astype(np.float64) / 255.0
    ycc = x[..., 2::-1] @ _YCBCR.T + _YCBCR_OFFSET
    y = upscale_stack(net, [ycc[..., 0]], (0.0, 1.0), scale=scale)[0]
    rest = imresize(np.concatenate([ycc[..., 1:], x[..., 3:]], axis=2), scale)
    rgb = (np.dstack([y, rest[..., :2]]) - _YCBCR_OFFSET) @ np.linalg.inv(_YCBCR).T
    return np.dstack([rgb[..., ::-1], rest[..., 2:]]) * 255.0


# -------------------------------------------------------------------------------- DICOM

def _upscale_dicom(src, dst, fmt, net, axis, scale, **derived):
    """A DICOM file (all its frames) into a file, or a series folder into a folder of the same
    file names (built in a temporary folder, renamed at the end); ``derived``: ``net_name``,
    ``used_series_numbers`` (the module docstring)."""
    if not src.is_dir():
        return _upscale_series([(src, fmt.read(src))], fmt, net, scale, lambda path: dst, **derived)
    items = _series_images(src, fmt)
    with atomic_dir(dst) as tmp:
        return _upscale_series(items, fmt, net, scale, lambda path: tmp / path.name, **derived)


def upscale_series_files(paths, dst, net, scale, *, net_name=None, used_series_numbers=()):
    """One DICOM series given as its files (``inference.upscale_tree``: a series is its
    SeriesInstanceUID, wherever its files lie) into the folder ``dst``, file names kept, as a
    series folder holding just those files is upscaled: the same reads, window and writes.
    ``net_name``, ``used_series_numbers``: as :func:`_upscale_dicom`."""
    fmt = by_name("dicom")
    paths = [Path(p) for p in paths]
    names = {}
    for path in paths:
        if path.name in names:
            raise DataError(f"{path}: its series has another file of this name "
                            f"({names[path.name]}); the output folder keeps file names")
        names[path.name] = path
    items = _read_images(paths, fmt, paths[0].parent)
    with atomic_dir(dst) as tmp:
        return _upscale_series(items, fmt, net, scale, lambda path: tmp / path.name,
                               net_name=net_name, used_series_numbers=used_series_numbers)


def _series_images(folder, fmt):
    """[(path, dataset)] of a folder's DICOM images (:func:`_read_images`)."""
    return _read_images(series_files(folder), fmt, folder)


def _read_images(paths, fmt, where):
    """[(path, dataset)] of the DICOM images among ``paths``. Other DICOM objects (a DICOMDIR, a
    structured report, a presentation state: an exported study often holds them) and unreadable
    files are skipped with a warning naming them, as `data_prep` does, and are not copied to the
    output."""
    items = []
    for path in paths:
        try:
            items.append((path, fmt.read(path)))
        except DataError as exc:
            warn(f"{exc}; skipped (not in the output)")
    if not items:
        raise DataError(f"{where}: no DICOM images (only objects without pixel data, or "
                        "unreadable files)")
    return items


def _check_series_geometry(items):
    """The output holds every slice of the series, each from its own file: a slice of another
    size is refused (one line naming it); slices that are not one evenly spaced stack are
    upscaled all the same, with a warning: each is refined in-plane and keeps the position it
    was read with, so the slice spacing is never used."""
    if len(items) < 2:
        return
    where = items[0][0].parent
    check_same_size(items, where)
    try:
        check_stack(sort_series(items)[0], where)
    except DataError as exc:
        warn(f"{exc}; inference.upscale refines each slice in-plane and keeps its position as read")


def _upscale_series(items, fmt, net, scale, out_path, net_name=None, used_series_numbers=()):
    """Upscale [(path, dataset)] of one series with one window, and write each file to
    ``out_path(path)`` in one new series, file by file (one file's estimates in memory).
    ``net_name`` defaults to the net's ``identity`` where it has one (``inference.upscale.load_net``
    sets it)."""
    derived = {"used_series_numbers": tuple(used_series_numbers)}
    net_name = net_name or getattr(net, "identity", None)
    series = group_series(items)
    if len(series) > 1:
        raise DataError(f"{items[0][0].parent}: holds {len(series)} DICOM series; "
                        "give a folder with one series, or --series REGEX (SERIES= with make) "
                        "to upscale each series it matches")
    _check_series_geometry(items)
    if any(dicom.is_colour(ds) for _, ds in items):
        return _upscale_colour_series(items, fmt, net, scale, out_path, net_name, derived)
    values = [dicom.linear_values(ds, path) for path, ds in items]
    for (path, _), v in zip(items, values):
        check_numeric(v, path, nonfinite=True)
        _check_plane(v.shape[1:], path)
    flat = np.concatenate([v.ravel() for v in values])
    eight_bit = all(dicom.stored_dtype(ds, p) == np.uint8 and dicom.rescale(ds, p) == (1.0, 0.0)
                    for p, ds in items)
    window = _window(flat, eight_bit)
    del flat
    uid = dicom.new_series_uid()
    note = derivation_note(scale, f", window {window[0]:.6g}..{window[1]:.6g}", net_name)
    total = sum(len(v) for v in values)
    with tqdm(total=total, desc="upscale", unit="slice", disable=None) as bar:
        for k, ((path, ds), v) in enumerate(zip(items, values)):
            out = output_array((len(v),) + upscaled_shape(v.shape[1:], scale), path)
            flip = [dicom.is_monochrome1(ds)] * len(v)
            upscale_stack(net, v, window, flip, scale=scale, out=out, progress=bar)
            values[k] = None  # this file's input is no longer needed
            fmt.write(out_path(path), ds, out, scale, series_uid=uid, description=note, **derived)
            del out
    return {"slices": total, "window": list(window)}


def _upscale_colour_series(items, fmt, net, scale, out_path, net_name=None, derived=None):
    """8-bit colour DICOM (ultrasound, endoscopy, screen captures) as colour pictures are: Y
    through the net, Cb and Cr bicubic (:func:`_upscale_colour`); written as RGB."""
    uid, total = dicom.new_series_uid(), 0
    note = derivation_note(scale, " of the luma (Y), chroma bicubic", net_name)
    for path, ds in items:
        if not dicom.is_colour(ds):
            raise DataError(f"{path}: a grey image in a series of colour images")
        rgb = dicom.colour_frames(ds, path)
        _check_plane(rgb.shape[1:3], path)
        out = np.stack([_upscale_colour(frame[..., ::-1], net, scale)[..., 2::-1] for frame in rgb])
        fmt.write(out_path(path), ds, out, scale, series_uid=uid, description=note, **(derived or {}))
        total += len(rgb)
    return {"slices": total, "window": [0.0, 255.0]}


# ------------------------------------------------------------------------------ volumes

def _upscale_volume(src, dst, fmt, net, axis, scale):
    """Every slice along the voxel axis closest to RAS+ axis ``axis``, x ``scale`` in-plane."""
    vol = fmt.read(src)
    values = check_numeric(vol.values, src, nonfinite=True).astype(np.float64)
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
    out = output_array(moved.shape[:-2] + upscaled_shape(moved.shape[-2:], scale), src)
    upscale_stack(net, frames, window, scale=scale, out=out.reshape((-1,) + out.shape[-2:]))
    del values, moved, frames
    fmt.write(dst, vol, np.moveaxis(out, (-2, -1), planes), planes, scale)
    return {"slices": math.prod(out.shape[:-2]), "window": list(window)}


HANDLERS = {"image": _upscale_image, "dicom": _upscale_dicom, "volume": _upscale_volume}
