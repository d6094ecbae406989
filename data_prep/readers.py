"""Read medical images as 2-D 8-bit grey slices for the SR pipeline.

``read_volume(path)`` accepts a file or a folder and returns ``(slices, info)``:
a list of :class:`Slice` (uint8, 2-D) and a dict describing what was done.

Formats
    * DICOM: one file (every frame of a multi-frame file is a slice) or a folder
      holding one series.  Detected by the ``DICM`` preamble or, for files
      without it, by a ``.dcm``/``.dicom``/``.dic``/``.ima`` extension or no
      extension (numeric "extensions" of UID-named files count as none).
      Modality LUT (RescaleSlope/Intercept) is applied, then MONOCHROME1 is
      inverted (``x -> max + min - x`` over the series) so bright = high.
      Series order: ImagePositionPatient projected onto the slice normal
      (row x column of ImageOrientationPatient), ascending; else InstanceNumber;
      else file name.  Frames of a multi-frame file keep their stored order.
      A folder with several series (SeriesInstanceUID) is an error that lists
      them; pass ``series=<uid>`` to pick one.  Colour DICOM is not supported.
    * NIfTI (``.nii``, ``.nii.gz``): 3-D (trailing singleton dimensions are
      dropped, 2-D counts as one slice; 4-D with several volumes is an error).
      The volume is first reoriented to the closest RAS+ canonical orientation,
      so ``axis`` 0/1/2 = sagittal/coronal/axial; each slice is ``np.rot90``'d so
      that superior (sagittal, coronal) or anterior (axial) is up and the
      patient's left is on the image's left in coronal/axial (neurological
      convention).
    * PNG/TIFF/BMP (8 or 16 bit; first page of a multi-page TIFF): colour is
      reduced to MATLAB's ``rgb2ycbcr`` luma Y (uint8 only; alpha is dropped).
      A folder of such images is read as independent 2-D images in natural name
      order ("img2" before "img10"); they may differ in size.

Intensity (see :mod:`data_prep.intensity`): DICOM series and NIfTI volumes are
mapped with one rule computed over the whole volume; 2-D images are mapped one
image at a time (they are independent pictures, not slices of one scan).

Errors are :class:`DataError` with a one-line message naming the file.  Inside
a folder, bad files (unreadable, unsupported, wrong size, constant ...) are
skipped with a ``warning:`` on stderr; if nothing good remains, DataError.
Hidden files, ``DICOMDIR`` and subfolders are ignored.
"""
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixel_data_handlers.util import apply_modality_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from data_prep import intensity
from core.errors import DataError, warn

__all__ = ["Slice", "read_volume", "sniff", "SUPPORTED"]

SUPPORTED = "DICOM, NIfTI (.nii, .nii.gz), PNG/TIFF/BMP"
IMAGE_EXTS = (".png", ".tif", ".tiff", ".bmp")
DICOM_EXTS = (".dcm", ".dicom", ".dic", ".ima")
NIFTI_EXTS = (".nii", ".nii.gz")
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"BM")


@dataclass
class Slice:
    """One 2-D 8-bit slice.

    name: file stem, plus ``_fNNNN`` (frame) for multi-frame DICOM or
        ``_xNNNN``/``_yNNNN``/``_zNNNN`` (slice along axis 0/1/2) for NIfTI.
    image: uint8 array (H, W).
    source: the file it came from.
    index: 0-based position in the returned list (volume order).
    """
    name: str
    image: np.ndarray
    source: str
    index: int


def read_volume(path, axis=2, rule="auto", *, series=None, **rule_params):
    """Read a file or folder as a list of uint8 2-D slices.

    Args:
        path: DICOM file/folder, NIfTI file, image file or folder of images.
        axis: NIfTI only: RAS+ axis to slice along (0 sagittal, 1 coronal, 2 axial).
        rule: intensity rule, one of ``intensity.RULES``.
        series: DICOM folders only: SeriesInstanceUID to read when there are several.
        **rule_params: passed to :func:`data_prep.intensity.convert`
            (``center``, ``width``, ``bits_stored``, ``percentiles``, ``modality``).

    Returns:
        ``(slices, info)``; ``info`` keys: format ("dicom"/"nifti"/"image"),
        source, rule (applied; "mixed" if images in a folder differ),
        requested_rule, intensity_scope ("volume"/"image"), rule_params (the
        rule's parameters, e.g. the percentile window ``low``/``high``; for
        "image" a dict {slice name: parameters}), n_slices, shape ((H, W) or
        None if sizes differ), pixel_spacing ([row, col] mm or None),
        slice_spacing (mm or None), sort_key, skipped (files skipped);
        DICOM adds modality and series_uid.
    """
    if axis not in (0, 1, 2):
        raise DataError(f"axis must be 0, 1 or 2 (got {axis!r})")
    intensity.check_rule(rule)  # fail before reading any file
    p = Path(path)
    if p.is_dir():
        return _read_folder(p, rule, series, rule_params)
    if not p.is_file():
        raise DataError(f"{p}: no such file or folder")
    kind = sniff(p)
    if kind == "dicom":
        return _dicom_volume([(p, _load_dicom(p))], p, rule, series, rule_params, None)
    if kind == "nifti":
        return _read_nifti(p, axis, rule, rule_params)
    if kind == "image":
        return _image_volume([(p, _load_image(p))], p, rule, rule_params, None)
    raise DataError(f"{p}: unsupported file format (supported: {SUPPORTED})")


def sniff(path) -> "str | None":
    """Guess a file's format: "dicom", "nifti", "image" or None (unsupported).

    Cheap (extension + first 132 bytes); the reader confirms it.
    """
    p = Path(path)
    name = p.name.lower()
    if name.endswith(NIFTI_EXTS):
        return "nifti"
    head = _head(p)
    if head[128:132] == b"DICM":
        return "dicom"
    suffix = p.suffix.lower()
    if suffix in IMAGE_EXTS or head.startswith(_IMAGE_MAGIC):
        return "image"
    # No preamble: still common for DICOM, often without any extension.
    if suffix in DICOM_EXTS or suffix == "" or suffix[1:].isdigit():
        return "dicom"
    return None


def _head(path, n=132) -> bytes:
    """First n bytes of a file (DataError if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})")


def _natural_key(path):
    """Sort key comparing digit runs as numbers ("s2" < "s10")."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", Path(path).name)]


def _stem(path, exts) -> str:
    """File name without a known extension (UID-like names keep their dots)."""
    name = Path(path).name
    for ext in exts:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


# --------------------------------------------------------------------- folders

def _read_folder(folder, rule, series, rule_params):
    """Read a folder of DICOM files (one series) or of 2-D images."""
    skipped = []
    groups = {"dicom": [], "image": []}
    for f in _folder_files(folder):
        try:
            kind = sniff(f)
        except DataError as exc:  # unreadable file: its message names it
            warn(f"{exc}; skipped")
            skipped.append(str(f))
            continue
        if kind in groups:
            groups[kind].append(f)
        elif kind == "nifti":
            _skip(f, "NIfTI volumes are read one file at a time; give the file itself", skipped)
        else:
            _skip(f, f"unsupported file format (supported: {SUPPORTED})", skipped)
    dicoms = _load_all(groups["dicom"], _load_dicom, skipped)
    images = _load_all(groups["image"], _load_image, skipped)
    if dicoms and images:
        raise DataError(f"{folder}: holds both DICOM and 2-D image files; "
                        "put them in separate folders")
    if dicoms:
        return _dicom_volume(dicoms, folder, rule, series, rule_params, skipped)
    if images:
        return _image_volume(images, folder, rule, rule_params, skipped)
    raise DataError(f"{folder}: no readable DICOM or 2-D image files "
                    f"({len(skipped)} skipped, see warnings)")


def _folder_files(folder):
    """Regular, non-hidden files of a folder in natural order (not recursive)."""
    files = [f for f in folder.iterdir()
             if f.is_file() and not f.name.startswith(".") and f.name.upper() != "DICOMDIR"]
    if not files:
        raise DataError(f"{folder}: folder has no files (subfolders are not searched)")
    return sorted(files, key=_natural_key)


def _skip(path, reason, skipped):
    """Warn about a bad file in a folder and remember it."""
    warn(f"{path}: {reason}; skipped")
    skipped.append(str(path))


def _try(func, item, skipped):
    """func(item); with ``skipped`` (a folder) a DataError skips the item -> None."""
    if skipped is None:
        return func(item)
    try:
        return func(item)
    except DataError as exc:
        warn(f"{exc}; skipped")
        skipped.append(str(item))
        return None


def _load_all(paths, load, skipped):
    """[(path, load(path))] for the paths that load; bad ones are skipped."""
    pairs = ((p, _try(load, p, skipped)) for p in paths)
    return [(p, v) for p, v in pairs if v is not None]


def _info(fmt, source, rinfo, n, shape, skipped, **extra):
    """The info dict common to all formats."""
    info = {"format": fmt, "source": str(source), "rule": rinfo.pop("rule"),
            "requested_rule": rinfo.pop("requested_rule"), "intensity_scope": "volume",
            "rule_params": rinfo, "n_slices": n, "shape": shape,
            "pixel_spacing": None, "slice_spacing": None, "sort_key": None,
            "skipped": list(skipped or [])}
    info.update(extra)
    return info


# ----------------------------------------------------------------------- DICOM

def _load_dicom(path):
    """Read a DICOM dataset (pixels decoded later); DataError unless it is an image."""
    try:
        ds = pydicom.dcmread(str(path))
    except InvalidDicomError:
        ds = _dcmread_forced(path)  # no 128-byte preamble: legal and common
    except Exception as exc:  # pydicom raises many types on corrupt files
        raise DataError(f"{path}: cannot read as DICOM ({exc})")
    if "PixelData" not in ds:
        raise DataError(f"{path}: not a DICOM image (no pixel data)")
    return ds


def _dcmread_forced(path):
    """dcmread(force=True), quietly: on non-DICOM files it warns about junk tags."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(str(path), force=True)
        except Exception as exc:
            raise DataError(f"{path}: not a DICOM file ({exc})")
    # Without file meta there is no TransferSyntaxUID, which pixel decoding
    # needs; pydicom has already worked out the encoding while reading.
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = (ImplicitVRLittleEndian if ds.is_implicit_VR else
                                  ExplicitVRLittleEndian if ds.is_little_endian else
                                  ExplicitVRBigEndian)
    return ds


def _dicom_volume(loaded, source, rule, series, rule_params, skipped):
    """Pick one series, sort it, decode, invert MONOCHROME1 and map to uint8."""
    chosen, uid = _pick_series(loaded, source, series)
    ordered, sort_key, spacing = _sort_series(chosen)
    decoded = _decode_series(ordered, skipped)
    stack = np.concatenate([arr for _, _, arr in decoded])
    flags = np.concatenate([[_is_mono1(ds)] * len(arr) for _, ds, arr in decoded])
    stack = _invert_monochrome1(stack, flags)
    ds0 = decoded[0][1]
    modality = str(ds0.get("Modality", "") or "").strip() or None
    params = {"modality": modality, "bits_stored": _bits_stored(decoded),
              **rule_params, "source": str(source)}
    out, rinfo = intensity.convert(stack, rule, **params)
    slices = [Slice(name, img, str(path), i)
              for i, ((name, path), img) in enumerate(zip(_frame_names(decoded), out))]
    return slices, _info("dicom", source, rinfo, len(slices), out.shape[1:], skipped,
                         pixel_spacing=_dicom_spacing(ds0), slice_spacing=spacing,
                         sort_key=sort_key, modality=modality, series_uid=uid)


def _pick_series(loaded, source, series):
    """The files of one SeriesInstanceUID; several without ``series`` -> DataError."""
    by_uid = {}
    for path, ds in loaded:
        by_uid.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((path, ds))
    if series is not None:
        if series not in by_uid:
            raise DataError(f"{source}: no DICOM series {series!r} here "
                            f"(found: {', '.join(by_uid)})")
        return by_uid[series], series
    if len(by_uid) > 1:
        listing = "; ".join(f"{uid or '<no UID>'} ({len(items)} files, "
                            f"{items[0][1].get('SeriesDescription', '')!s})"
                            for uid, items in by_uid.items())
        raise DataError(f"{source}: holds {len(by_uid)} DICOM series; point at a folder "
                        f"with one series or pass series=<SeriesInstanceUID>: {listing}")
    uid, items = next(iter(by_uid.items()))
    return items, uid


def _sort_series(items):
    """Sort (path, ds) pairs; returns (sorted, sort key name, slice spacing or None)."""
    if len(items) == 1:
        return items, "frame order", None
    normal = _slice_normal(items[0][1])
    positions = [_position(ds) for _, ds in items]
    if normal is not None and all(p is not None for p in positions):
        keys = [float(np.dot(normal, p)) for p in positions]
        order = sorted(range(len(items)), key=lambda i: (keys[i], _natural_key(items[i][0])))
        gaps = np.diff([keys[i] for i in order])
        return [items[i] for i in order], "ImagePositionPatient", float(np.median(gaps))
    numbers = [_int_or_none(ds.get("InstanceNumber")) for _, ds in items]
    if all(n is not None for n in numbers):
        order = sorted(range(len(items)), key=lambda i: (numbers[i], _natural_key(items[i][0])))
        return [items[i] for i in order], "InstanceNumber", None
    return sorted(items, key=lambda it: _natural_key(it[0])), "filename", None


def _floats(value, n):
    """Tuple of n floats from a DICOM multi-value, or None if absent/malformed."""
    try:
        vals = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return np.array(vals) if len(vals) == n else None


def _position(ds):
    """ImagePositionPatient as a 3-vector, or None."""
    return _floats(ds.get("ImagePositionPatient"), 3)


def _slice_normal(ds):
    """Unit normal (row x column direction) from ImageOrientationPatient, or None."""
    iop = _floats(ds.get("ImageOrientationPatient"), 6)
    if iop is None:
        return None
    normal = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 1e-6 else None


def _int_or_none(value):
    """int(value), or None if absent/malformed."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _decode_series(ordered, skipped):
    """[(path, ds, frames (n, H, W))]; in a folder, undecodable files and files
    whose size differs from the series' most common size are skipped."""
    decoded = []
    for path, ds in ordered:
        arr = _try(lambda p, d=ds: _dicom_frames(d, p), path, skipped)
        if arr is not None:
            decoded.append((path, ds, arr))
    if not decoded:
        raise DataError(f"{ordered[0][0].parent}: no DICOM file could be decoded")
    counts = Counter()
    for _, _, arr in decoded:
        counts[arr.shape[1:]] += len(arr)
    rows, cols = counts.most_common(1)[0][0]
    kept = []
    for path, ds, arr in decoded:
        if arr.shape[1:] == (rows, cols):
            kept.append((path, ds, arr))
        else:  # only possible in a folder (a single file has one size)
            _skip(path, f"size {arr.shape[2]}x{arr.shape[1]} differs from the "
                        f"series' {cols}x{rows}", skipped)
    return kept


def _dicom_frames(ds, path):
    """Pixel data as (frames, H, W) after the modality LUT."""
    try:
        arr = ds.pixel_array
    except Exception as exc:  # missing decoder, truncated data, bad tags ...
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise DataError(f"{path}: cannot decode DICOM pixel data (transfer syntax {ts}): {exc}")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DataError(f"{path}: colour DICOM ({ds.get('PhotometricInterpretation')}) "
                        "is not supported")
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3:
        raise DataError(f"{path}: unexpected DICOM pixel array shape {arr.shape}")
    try:
        out = apply_modality_lut(arr, ds)
    except Exception as exc:
        raise DataError(f"{path}: bad modality LUT / rescale ({exc})")
    # Identity rescale (slope 1, intercept 0) gives float64; keep the stored
    # dtype so 8-bit data stays uint8 and "auto" picks the "none" rule.
    if out.dtype != arr.dtype and np.array_equal(out, arr):
        out = arr
    return out


def _is_mono1(ds) -> bool:
    """MONOCHROME1: the minimum value is displayed white."""
    return str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1"


def _invert_monochrome1(stack, flags):
    """Flip MONOCHROME1 slices to bright = high: x -> max + min - x (series-wide)."""
    if not flags.any():
        return stack
    work = stack.astype(np.float64 if stack.dtype.kind == "f" else np.int64)
    total = work.max() + work.min()  # wide type: no overflow; result stays in [min, max]
    work[flags] = total - work[flags]
    return work.astype(stack.dtype)


def _bits_stored(decoded):
    """Largest BitsStored in the series (None if no file has it)."""
    bits = [_int_or_none(ds.get("BitsStored")) for _, ds, _ in decoded]
    bits = [b for b in bits if b]
    return max(bits) if bits else None


def _frame_names(decoded):
    """[(slice name, path)]: file stem, plus _fNNNN for multi-frame files."""
    names = []
    for path, _, arr in decoded:
        stem = _stem(path, DICOM_EXTS)
        if len(arr) == 1:
            names.append((stem, path))
        else:
            names.extend((f"{stem}_f{k:04d}", path) for k in range(len(arr)))
    return names


def _dicom_spacing(ds):
    """[row, col] spacing in mm: PixelSpacing, ImagerPixelSpacing or the
    enhanced multi-frame shared group; None if unknown."""
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        vals = _floats(ds.get(tag), 2)
        if vals is not None:
            return [float(v) for v in vals]
    try:
        measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        vals = _floats(measures.get("PixelSpacing"), 2)
    except (AttributeError, IndexError, KeyError):
        vals = None
    return None if vals is None else [float(v) for v in vals]


# ----------------------------------------------------------------------- NIfTI

def _read_nifti(path, axis, rule, rule_params):
    """Slices of a NIfTI volume along a RAS+ axis, rotated for display."""
    data, zooms = _load_nifti(path)
    # rot90 of each (i, j) slice: rows = j reversed (anterior/superior up), cols = i.
    stack = np.rot90(np.moveaxis(data, axis, 0), k=1, axes=(1, 2))
    out, rinfo = intensity.convert(stack, rule, **{**rule_params, "source": str(path)})
    i, j = [a for a in range(3) if a != axis]
    stem, letter = _stem(path, NIFTI_EXTS), "xyz"[axis]
    slices = [Slice(f"{stem}_{letter}{k:04d}", img, str(path), k) for k, img in enumerate(out)]
    return slices, _info("nifti", path, rinfo, len(slices), out.shape[1:], None,
                         pixel_spacing=[zooms[j], zooms[i]], slice_spacing=zooms[axis],
                         sort_key=f"RAS+ axis {axis}, ascending")


def _load_nifti(path):
    """(3-D data in closest RAS+ canonical orientation, voxel sizes in mm)."""
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)  # applies scl_slope/inter, else keeps dtype
    except Exception as exc:  # nibabel/gzip raise many types on bad files
        raise DataError(f"{path}: cannot read NIfTI ({exc})")
    data = _as_3d(data, path)
    canon = nib.as_closest_canonical(nib.Nifti1Image(data, img.affine))
    zooms = [float(z) for z in canon.header.get_zooms()[:3]]
    return np.asanyarray(canon.dataobj), zooms


def _as_3d(data, path):
    """Drop trailing singleton dims (4-D with one volume), 2-D -> one slice."""
    shape = data.shape
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., np.newaxis]
    if data.ndim != 3:
        raise DataError(f"{path}: NIfTI shape {shape} is not a 3-D volume "
                        "(4-D is accepted only with a single volume)")
    return data


# ---------------------------------------------------------------------- images

def _load_image(path):
    """A PNG/TIFF/BMP file as a 2-D grey array (uint8, uint16 or float)."""
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)  # imdecode: non-ASCII paths work
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise DataError(f"{path}: cannot decode as an image (supported: {SUPPORTED})")
    return _to_grey(img, path)


def _to_grey(img, path):
    """Grey stays; BGR(A) -> MATLAB rgb2ycbcr luma Y; grey+alpha -> grey."""
    if img.ndim == 3 and img.shape[2] in (1, 2):
        img = img[..., 0]
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] in (3, 4):
        if img.dtype != np.uint8:
            raise DataError(f"{path}: {img.dtype} colour images are not supported "
                            "(need 8-bit colour or grey)")
        from data_prep.matlab import rgb2ycbcr
        # cv2 gives BGR(A): reverse the first three channels, drop alpha.
        return rgb2ycbcr(np.ascontiguousarray(img[..., 2::-1]))
    raise DataError(f"{path}: unexpected image shape {img.shape}")


def _image_volume(loaded, source, rule, rule_params, skipped):
    """Map each 2-D image on its own (independent pictures, sizes may differ)."""
    slices, per_image = [], {}
    for path, grey in loaded:
        params = {**rule_params, "source": str(path)}
        converted = _try(lambda p: intensity.convert(grey, rule, **params), path, skipped)
        if converted is None:
            continue
        out, rinfo = converted
        name = _stem(path, IMAGE_EXTS)
        if name in per_image:  # "a.png" and "a.tif": keep names unique
            name = path.name
        slices.append(Slice(name, out, str(path), len(slices)))
        per_image[name] = {k: v for k, v in rinfo.items() if k != "requested_rule"}
    if not slices:
        raise DataError(f"{source}: no usable images ({len(skipped or [])} skipped, see warnings)")
    rules = {r["rule"] for r in per_image.values()}
    shapes = {s.image.shape for s in slices}
    rinfo = {"rule": rules.pop() if len(rules) == 1 else "mixed", "requested_rule": rule}
    info = _info("image", source, rinfo, len(slices),
                 shapes.pop() if len(shapes) == 1 else None, skipped,
                 sort_key="natural file name" if len(slices) > 1 else "single file")
    info.update(intensity_scope="image", rule_params=per_image)
    return slices, info
