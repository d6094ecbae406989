"""Super-resolve a user's image x3 with a trained net and write it back in the same format.

    python -m eval.upscale --in PATH --out PATH
        (--run RUN_DIR | --model CAFFEMODEL --deploy PROTOTXT)
        [--engine caffe|opencv] [--axis 2] [--force]

One 2-D slice goes as the net was trained (8-bit grey in [0, 1], LR -> bicubic x3 -> net):
map it to [0, 1] with an intensity window lo..hi, upscale it with the MATLAB-exact
``imresize(x, 3)``, run the net, map back with ``lo + y * (hi - lo)`` (not clipped to the window:
values outside it pass through linearly) and round half away from zero, clipped only to the
output type's range.

Windows (one per file, or per DICOM series / NIfTI volume):
    * 8-bit data (PNG, unscaled uint8 DICOM or NIfTI): 0..255, as the training images.
    * 16-bit (or float) grey PNG/TIFF: the image's min..max.
    * DICOM and NIfTI otherwise: the 0.5-99.5 percentile window of the volume (the "mr" rule of
      ``data_prep.intensity``), min..max when the two coincide; over DICOM values after
      RescaleSlope/Intercept, over NIfTI values after scl_slope/scl_inter.
    A constant image gets the window lo..lo+1 (any width gives the same result there).

Formats:
    * PNG/TIFF/BMP: grey 8- or 16-bit (or float TIFF) in and out. 8-bit colour: Y (MATLAB's
      rgb2ycbcr, in float) goes through the net, Cb and Cr (and alpha) are upscaled bicubically,
      then converted back to RGB, as the SRCNN demo does. Other colour depths are refused.
    * DICOM file or series folder: the same BitsAllocated/BitsStored/PixelRepresentation, stored
      values = (value - RescaleIntercept) / RescaleSlope with each file's own rescale, clipped to
      the BitsStored range; Rows/Columns x3; PixelSpacing and ImagerPixelSpacing / 3 (also inside
      functional groups); ImagePositionPatient moved to the new first pixel centre (see below);
      a new SOPInstanceUID per file, one new SeriesInstanceUID for the series; Explicit VR Little
      Endian, uncompressed; SmallestImagePixelValue/LargestImagePixelValue dropped (no longer
      true); DerivationDescription records the net and window; every other tag kept.
      MONOCHROME1 stays MONOCHROME1: the net sees 1 - x (bright = high, like its training data)
      and its output is flipped back. A folder gives a folder with the same file names.
    * NIfTI (.nii, .nii.gz; output compression follows the --out name): ``--axis`` counts RAS+
      axes as ``data_prep`` does (0 sagittal, 1 coronal, 2 axial); every slice along the file's
      voxel axis closest to it is upscaled in the plane of the two other voxel axes. The file
      keeps its voxel order (no reorientation is written). Integer data keeps its dtype (and
      scl_slope/scl_inter, stored values restored); float data is written as float32.

Geometry convention (MATLAB's imresize): new pixel n of an upscaled axis has its centre at old
index (n + 0.5) / 3 - 0.5 = n / 3 - 1/3, so the image keeps its extent and new pixel 1 sits on
old pixel 0's centre. NIfTI: the in-plane affine columns are divided by 3 and the origin moved by
-1/3 of each old in-plane column, so world(new [1, 1, k]) == world(old [0, 0, k]) (axis 2); the
zooms are divided by 3. DICOM: ImagePositionPatient moves by -1/3 of an old pixel along the row
and column directions.

A tqdm progress bar over the slices goes to stderr when it is a terminal.

Errors are one line, ``upscale: error: ...`` on stderr, exit code 2, and leave no output: files
are written under temporary names and renamed at the end (a DICOM folder is built in a temporary
folder beside --out). An existing --out is refused unless --force.
"""
import os

os.environ.setdefault("GLOG_minloglevel", "2")  # before Caffe loads: keep errors to one line

import argparse  # noqa: E402
import copy  # noqa: E402
import gzip  # noqa: E402
import io  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from pydicom.dataset import FileMetaDataset  # noqa: E402
from pydicom.errors import InvalidDicomError  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402
from pydicom.valuerep import DSfloat  # noqa: E402
from tqdm import tqdm  # noqa: E402

from core.errors import DataError, warn  # noqa: E402
from data_prep.intensity import DEFAULT_PERCENTILES, check_numeric, percentile_window  # noqa: E402
from data_prep.matlab import imresize, round_half_away  # noqa: E402
from data_prep.readers import IMAGE_EXTS, NIFTI_EXTS, SUPPORTED, sniff  # noqa: E402
from core.atomic import atomic_path, replace_dir, temp_dir_beside  # noqa: E402
from core.run_files import final_snapshot  # noqa: E402

SCALE = 3
MIN_SIDE = 2  # a slice thinner than this is 1-D: there is nothing to super-resolve
_YCBCR = np.array([[65.481, 128.553, 24.966],
                   [-37.797, -74.203, 112.0],
                   [112.0, -93.786, -18.214]]) / 255.0  # MATLAB rgb2ycbcr, [0, 1] scale
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0]) / 255.0


# ------------------------------------------------------------------------------ public API

def upscale_path(in_path, out_path, net, axis=2, force=False):
    """Super-resolve ``in_path`` x3 into ``out_path``, in the input's format.

    Args:
        in_path: PNG/TIFF/BMP, DICOM file, DICOM series folder or NIfTI file.
        out_path: the file (or, for a DICOM folder, the folder) to write; nothing is written
            there unless everything succeeds.
        net: maps a bicubic-upscaled float image ([0, 1] scale) to its estimate of the same
            size, e.g. an ``eval.infer.SRNet``.
        axis: NIfTI only: the RAS+ axis (0 sagittal, 1 coronal, 2 axial) whose slices are
            upscaled; the voxel axis closest to it is found from the affine.
        force: replace an existing ``out_path``.

    Returns:
        ``{"format", "slices", "window": [lo, hi], "out"}``.

    Raises:
        DataError: unsupported or unusable input, or ``out_path`` exists (without ``force``).
    """
    src, dst = Path(in_path), Path(out_path)
    kind = check_io(src, dst, force)
    handlers = {"image": _upscale_image, "dicom": _upscale_dicom_file,
                "folder": _upscale_dicom_folder, "nifti": _upscale_nifti}
    info = handlers[kind](src, dst, net, axis)
    return {"format": kind, **info, "out": str(dst)}


def check_io(src, dst, force=False):
    """The input's kind ("image", "dicom", "folder", "nifti"), after checking that it exists,
    is supported, and that ``dst`` may be written; DataError otherwise."""
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise DataError(f"{src}: no such file or folder")
    kind = "folder" if src.is_dir() else sniff(src)
    if kind is None:
        raise DataError(f"{src}: unsupported file format (supported: {SUPPORTED})")
    if dst.resolve() == src.resolve():
        raise DataError(f"{dst}: --out is the input; write somewhere else")
    if dst.exists() or dst.is_symlink():
        if not force:
            raise DataError(f"{dst}: already exists (add --force to replace it)")
        if dst.is_dir() != (kind == "folder"):
            raise DataError(f"{dst}: exists and is a {'folder' if dst.is_dir() else 'file'}; "
                            f"the output is a {'folder' if kind == 'folder' else 'file'}")
    _check_out_name(kind, dst)
    return kind


def upscale_slice(net, x01):
    """The net's x3 estimate (float64, [0, 1] scale) of one 2-D slice in [0, 1] scale."""
    return np.asarray(net(imresize(np.asarray(x01, dtype=np.float64), SCALE)), dtype=np.float64)


def upscale_stack(net, slices, window, invert=None, desc="upscale"):
    """x3 estimates of 2-D slices, in their own intensity scale (float64, neither clipped nor
    rounded), all mapped through one ``window`` (lo, hi). ``invert[i]`` flips slice i inside
    the window for the net (MONOCHROME1), and flips the estimate back."""
    lo, hi = window
    invert = [False] * len(slices) if invert is None else invert
    out = []
    for s, flip in zip(tqdm(slices, desc=desc, unit="slice", disable=None), invert):
        x = (np.asarray(s, dtype=np.float64) - lo) / (hi - lo)
        y = upscale_slice(net, 1.0 - x if flip else x)
        out.append(lo + (1.0 - y if flip else y) * (hi - lo))
    return out


def upscaled_affine(affine, axes, scale=SCALE):
    """A voxel-to-world affine for a volume upscaled by ``scale`` along ``axes``: those columns
    divided by ``scale``, the origin moved so new index n lies at old index
    (n + 0.5) / scale - 0.5 (imresize's convention: the image keeps its extent)."""
    affine = np.asarray(affine, dtype=np.float64)
    new = affine.copy()
    for a in axes:
        new[:3, 3] += affine[:3, a] * (0.5 / scale - 0.5)
        new[:3, a] = affine[:3, a] / scale
    return new


# ---------------------------------------------------------------------------- helpers

def _check_out_name(kind, dst):
    """The --out name must say the same format as the input (the writer follows it)."""
    name = dst.name.lower()
    if kind == "image" and not name.endswith(IMAGE_EXTS):
        raise DataError(f"{dst}: --out for an image must end in {', '.join(IMAGE_EXTS)}")
    if kind == "nifti" and not name.endswith(NIFTI_EXTS):
        raise DataError(f"{dst}: --out for a NIfTI file must end in .nii or .nii.gz")


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


def _to_dtype(values, dtype, lo=None, hi=None):
    """Round half away from zero and clip to [lo, hi] (default: the dtype's range); float
    dtypes are only cast."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.asarray(values).astype(dtype)
    info = np.iinfo(dtype)
    lo = info.min if lo is None else lo
    hi = info.max if hi is None else hi
    return np.clip(round_half_away(values), lo, hi).astype(dtype)


def _write_bytes(path, data):
    """Write ``data`` to ``path`` through a temporary file beside it, renamed at the end."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# ------------------------------------------------------------------------------- images

def _upscale_image(src, dst, net, axis):
    """PNG/TIFF/BMP: grey through the net; 8-bit colour as Y (net) + Cb, Cr (bicubic)."""
    img = _read_image(src)
    _check_plane(img.shape[:2], src)
    if img.ndim == 3:
        window = (0.0, 255.0)
        out = _upscale_colour(img, net)
    else:
        # 8-bit as the training images; deeper images use their full range (min..max).
        window = _window(img, img.dtype == np.uint8, percentiles=(0, 100))
        out = _to_dtype(upscale_stack(net, [img], window)[0], img.dtype)
    ok, buf = cv2.imencode(dst.suffix.lower(), out)
    if not ok:
        raise DataError(f"{dst}: cannot encode a {out.dtype} image in {dst.suffix} format")
    _write_bytes(dst, buf.tobytes())
    return {"slices": 1, "window": list(window)}


def _read_image(src):
    """The image as cv2 reads it (grey HxW, or BGR/BGRA uint8); DataError otherwise."""
    buf = np.fromfile(str(src), dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise DataError(f"{src}: cannot decode as an image (supported: {SUPPORTED})")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3 and (img.dtype != np.uint8 or img.shape[2] not in (3, 4)):
        raise DataError(f"{src}: {img.dtype} images with {img.shape[2]} channels are not "
                        "supported (need grey, or 8-bit colour)")
    check_numeric(img, src)
    return img


def _upscale_colour(bgr, net):
    """8-bit BGR(A) x3: Y through the net, Cb/Cr (and alpha) bicubic, back to BGR(A) uint8."""
    x = bgr.astype(np.float64) / 255.0
    ycc = x[..., 2::-1] @ _YCBCR.T + _YCBCR_OFFSET
    y = upscale_stack(net, [ycc[..., 0]], (0.0, 1.0))[0]
    rest = imresize(np.concatenate([ycc[..., 1:], x[..., 3:]], axis=2), SCALE)
    rgb = (np.dstack([y, rest[..., :2]]) - _YCBCR_OFFSET) @ np.linalg.inv(_YCBCR).T
    out = np.dstack([rgb[..., ::-1], rest[..., 2:]]) * 255.0
    return _to_dtype(out, np.uint8)


# -------------------------------------------------------------------------------- DICOM

def _upscale_dicom_file(src, dst, net, axis):
    """One DICOM file (every frame of a multi-frame file) into one DICOM file."""
    outs, info = _upscale_series([(src, _read_dicom(src))], net)
    buf = io.BytesIO()
    outs[0].save_as(buf, write_like_original=False)
    _write_bytes(dst, buf.getvalue())
    return info


def _upscale_dicom_folder(src, dst, net, axis):
    """A folder holding one DICOM series into a folder of the same file names."""
    files = _dicom_files(src)
    outs, info = _upscale_series([(f, _read_dicom(f)) for f in files], net)
    tmp = temp_dir_beside(dst)
    try:
        for path, ds in zip(files, outs):
            ds.save_as(str(tmp / path.name), write_like_original=False)
        replace_dir(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _dicom_files(folder):
    """The folder's DICOM files (others are skipped with a warning); DataError if none."""
    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                   and f.name.upper() != "DICOMDIR")
    dicoms = []
    for f in files:
        if sniff(f) == "dicom":
            dicoms.append(f)
        else:
            warn(f"{f}: not a DICOM file; skipped")
    if not dicoms:
        raise DataError(f"{folder}: no DICOM files (subfolders are not searched)")
    return dicoms


def _read_dicom(path):
    """A DICOM image dataset; DataError if it is not one."""
    try:
        ds = pydicom.dcmread(str(path))
    except InvalidDicomError:
        with warnings.catch_warnings():  # no preamble is legal; force warns on junk
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(str(path), force=True)
            except Exception as exc:
                raise DataError(f"{path}: not a DICOM file ({exc})")
    except Exception as exc:  # pydicom raises many types on corrupt files
        raise DataError(f"{path}: cannot read as DICOM ({exc})")
    if "PixelData" not in ds:
        raise DataError(f"{path}: not a DICOM image (no pixel data)")
    return ds


def _upscale_series(items, net):
    """Output datasets for [(path, dataset)] of one series, with one window and series UID."""
    uids = {str(ds.get("SeriesInstanceUID", "")) for _, ds in items}
    if len(uids) > 1:
        raise DataError(f"{items[0][0].parent}: holds {len(uids)} DICOM series; "
                        "give a folder with one series")
    values = [_dicom_values(ds, path) for path, ds in items]
    flat = np.concatenate([v.ravel() for v in values])
    eight_bit = all(_stored_dtype(ds, p) == np.uint8 and _rescale(ds, p) == (1.0, 0.0)
                    for p, ds in items)
    window = _window(flat, eight_bit)
    frames = [f for v in values for f in v]
    invert = [_is_mono1(ds) for (_, ds), v in zip(items, values) for _ in v]
    upscaled = iter(upscale_stack(net, frames, window, invert))
    series_uid = generate_uid()
    outs = [_dicom_output(ds, path, np.stack([next(upscaled) for _ in v]), series_uid, window)
            for (path, ds), v in zip(items, values)]
    return outs, {"slices": len(frames), "window": list(window)}


def _dicom_values(ds, path):
    """Pixel values (frames, H, W) float64 after RescaleSlope/Intercept; DataError otherwise."""
    if "ModalityLUTSequence" in ds:
        raise DataError(f"{path}: a Modality LUT Sequence cannot be inverted; not supported")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DataError(f"{path}: colour DICOM ({ds.get('PhotometricInterpretation')}) "
                        "is not supported")
    _stored_dtype(ds, path)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # missing decoder, truncated data, bad tags ...
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise DataError(f"{path}: cannot decode DICOM pixel data (transfer syntax {ts}): {exc}")
    arr = arr[np.newaxis] if arr.ndim == 2 else arr
    if arr.ndim != 3:
        raise DataError(f"{path}: unexpected DICOM pixel array shape {arr.shape}")
    check_numeric(arr, path)
    _check_plane(arr.shape[1:], path)
    slope, intercept = _rescale(ds, path)
    return arr.astype(np.float64) * slope + intercept


def _rescale(ds, path):
    """(RescaleSlope, RescaleIntercept), (1, 0) when absent; DataError for a zero slope."""
    def number(keyword, default):
        value = ds.get(keyword)
        return default if value is None or value == "" else float(value)
    slope, intercept = number("RescaleSlope", 1.0), number("RescaleIntercept", 0.0)
    if slope == 0:
        raise DataError(f"{path}: RescaleSlope is 0")
    return slope, intercept


def _stored_dtype(ds, path):
    """numpy dtype of the stored pixels (BitsAllocated 8/16/32, PixelRepresentation)."""
    bits, signed = int(ds.get("BitsAllocated", 0) or 0), int(ds.get("PixelRepresentation", 0) or 0)
    if bits not in (8, 16, 32):
        raise DataError(f"{path}: BitsAllocated {bits} is not supported (need 8, 16 or 32)")
    return np.dtype(f"{'i' if signed else 'u'}{bits // 8}")


def _is_mono1(ds):
    """MONOCHROME1: the minimum is displayed white."""
    return str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1"


def _dicom_output(ds, path, values, series_uid, window):
    """A copy of ``ds`` holding the upscaled ``values`` (frames, H, W) at its stored scale."""
    out = copy.deepcopy(ds)
    slope, intercept = _rescale(ds, path)
    stored = _to_dtype((values - intercept) / slope, _stored_dtype(ds, path),
                       *_stored_range(ds, path))
    out.Rows, out.Columns = stored.shape[1:]
    _set_pixel_data(out, stored)
    _scale_geometry(out)
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):
        if keyword in out:  # bounds of the old pixels, no longer true
            delattr(out, keyword)
    out.DerivationDescription = (f"SRCNN x{SCALE} super-resolution, window "
                                 f"{window[0]:.6g}..{window[1]:.6g}")[:1024]
    _set_uids(out, series_uid)
    return out


def _stored_range(ds, path):
    """(lo, hi) that BitsStored can hold."""
    dtype = _stored_dtype(ds, path)
    bits = int(ds.get("BitsStored", 0) or 0) or dtype.itemsize * 8
    if dtype.kind == "i":
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def _set_pixel_data(ds, stored):
    """Native little-endian PixelData (a fresh element: the old one may be encapsulated)."""
    data = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    data += b"\0" * (len(data) % 2)  # DICOM values have even length
    del ds.PixelData
    ds.add_new(0x7FE00010, "OW" if stored.dtype.itemsize > 1 else "OB", data)


def _first(ds, keyword):
    """The first value of ``keyword`` anywhere in ``ds`` (sequences included), or None."""
    found = []
    ds.walk(lambda _, elem: found.append(elem.value) if elem.keyword == keyword else None)
    return found[0] if found else None


def _scale_geometry(ds):
    """Pixel spacings / 3 and ImagePositionPatient on the new first pixel centre, wherever
    they appear (enhanced multi-frame files keep them in functional group sequences)."""
    spacing = _first(ds, "PixelSpacing")
    orientation = _first(ds, "ImageOrientationPatient")
    shift = None
    if spacing is not None and orientation is not None and len(orientation) == 6:
        iop, (row_step, col_step) = np.array(orientation, float), map(float, spacing)
        # IOP[:3] runs along a row (next column, PixelSpacing[1]); IOP[3:] down a column.
        shift = (iop[:3] * col_step + iop[3:] * row_step) * (0.5 / SCALE - 0.5)

    def fix(_, elem):
        if elem.keyword in ("PixelSpacing", "ImagerPixelSpacing") and elem.value is not None:
            elem.value = [_ds(float(v) / SCALE) for v in elem.value]
        elif elem.keyword == "ImagePositionPatient" and shift is not None and elem.value:
            elem.value = [_ds(float(v) + d) for v, d in zip(elem.value, shift)]
    ds.walk(fix)


def _ds(value):
    """A DS value that fits DICOM's 16 characters."""
    return DSfloat(value, auto_format=True)


def _set_uids(ds, series_uid):
    """New SOP instance, the new series, and file meta for Explicit VR Little Endian."""
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series_uid
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.is_little_endian, ds.is_implicit_VR = True, False


# -------------------------------------------------------------------------------- NIfTI

def _voxel_axis(img, ras_axis, src):
    """The voxel axis of ``img`` closest to RAS+ axis ``ras_axis``, as data_prep counts axes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a degenerate affine: reported below
            found = np.flatnonzero(nib.io_orientation(img.affine)[:, 0] == ras_axis)
    except (np.linalg.LinAlgError, ValueError):
        found = np.array([])
    if found.size != 1:
        raise DataError(f"{src}: the affine tells no voxel axis for RAS+ axis {ras_axis}")
    return int(found[0])


def _upscale_nifti(src, dst, net, axis):
    """Every slice along the voxel axis closest to RAS+ axis ``axis`` x3 in-plane; affine,
    zooms, dtype as documented."""
    img, values = _read_nifti(src)
    if values.ndim >= 3:
        axis = _voxel_axis(img, axis, src)
    planes = [d for d in range(min(values.ndim, 3)) if d != axis]
    if values.ndim < 2 or len(planes) != 2:
        raise DataError(f"{src}: NIfTI shape {values.shape} has no 2-D slices along axis {axis}")
    _check_plane([values.shape[d] for d in planes], src)
    raw = img.get_data_dtype()
    slope, inter = (float(getattr(img.dataobj, k, d)) for k, d in (("slope", 1), ("inter", 0)))
    window = _window(values, eight_bit=raw == np.uint8 and (slope, inter) == (1.0, 0.0))
    moved = np.moveaxis(values, planes, (-2, -1))
    frames = upscale_stack(net, list(moved.reshape((-1,) + moved.shape[-2:])), window)
    out = np.stack(frames).reshape(moved.shape[:-2] + frames[0].shape)
    out = np.moveaxis(out, (-2, -1), planes)
    data = out.astype(np.float32) if raw.kind == "f" else _to_dtype((out - inter) / slope, raw)
    new = _nifti_like(img, data, planes, (slope, inter) if raw.kind != "f" else None)
    payload = new.to_bytes()
    if dst.name.lower().endswith(".gz"):
        payload = gzip.compress(payload)
    _write_bytes(dst, payload)
    return {"slices": len(frames), "window": list(window)}


def _read_nifti(src):
    """(image, its values as a float64 array after scl_slope/scl_inter); DataError if bad."""
    try:
        img = nib.load(str(src))
        values = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel/gzip raise many types on bad files
        raise DataError(f"{src}: cannot read NIfTI ({exc})")
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(f"{src}: not a single-file NIfTI image")
    check_numeric(values, src)
    return img, values.astype(np.float64)


def _nifti_like(img, data, planes, scaling):
    """A NIfTI image of ``img``'s class and header holding ``data``, with qform/sform
    upscaled along ``planes`` (codes kept), zooms / 3 and the given (slope, inter)."""
    header = img.header.copy()
    new = type(img)(data, None, header=header)
    qform, qcode = img.get_qform(coded=True)
    sform, scode = img.get_sform(coded=True)
    new.set_qform(None if qform is None else upscaled_affine(qform, planes), code=int(qcode))
    new.set_sform(None if sform is None else upscaled_affine(sform, planes), code=int(scode))
    zooms = list(img.header.get_zooms())
    for d in planes:
        zooms[d] = zooms[d] / SCALE
    new.header.set_zooms(zooms)
    new.set_data_dtype(data.dtype)
    if scaling is not None and scaling != (1.0, 0.0):
        new.header.set_slope_inter(*scaling)  # data holds stored values: keep their scaling
    return new


# ---------------------------------------------------------------------------------- CLI

def resolve_model(run=None, model=None, deploy=None):
    """(deploy prototxt, caffemodel): given directly, or the last snapshot of a run directory
    and its deploy net."""
    if run is None:
        return Path(deploy), Path(model)
    _, deploy, caffemodel = final_snapshot(run)
    return deploy, caffemodel


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m eval.upscale",
                                description="Super-resolve an image x3 with a trained SRCNN "
                                            "and write it back in the same format.")
    p.add_argument("--in", dest="input", type=Path, required=True,
                   help="PNG/TIFF/BMP, DICOM file or series folder, or NIfTI (.nii, .nii.gz)")
    p.add_argument("--out", type=Path, required=True,
                   help="output file (a folder for a DICOM folder); same format as --in")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--run", type=Path, help="run directory: its last snapshot and deploy net")
    model.add_argument("--model", type=Path, help="a caffemodel (with --deploy)")
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
        deploy, caffemodel = resolve_model(args.run, args.model, args.deploy)
        from eval.infer import SRNet  # imports Caffe: only once the paths are known good
        net = SRNet(deploy, caffemodel, engine=args.engine)
        info = upscale_path(args.input, args.out, net, axis=args.axis, force=args.force)
    except DataError as e:
        print(f"upscale: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("upscale: interrupted; no output was written", file=sys.stderr)
        return 130
    lo, hi = info["window"]
    print(f"upscale: {info['slices']} slice(s) x{SCALE}, window {lo:.6g}..{hi:.6g} "
          f"-> {info['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
