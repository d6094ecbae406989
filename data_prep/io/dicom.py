"""DICOM files: read (forced when there is no preamble), decode frames, write an upscaled copy.

Series-level work (grouping by SeriesInstanceUID, slice order, spacing) is in
:mod:`data_prep.io.dicom_series`.

Writing (:func:`write`) keeps BitsAllocated/BitsStored/PixelRepresentation and every other tag,
and changes only what the upscaling makes untrue: stored values = (value - RescaleIntercept) /
RescaleSlope with the file's own rescale, rounded half away from zero and clipped to the
BitsStored range; Rows/Columns x scale; PixelSpacing and ImagerPixelSpacing / scale (also inside
functional groups); ImagePositionPatient moved by (0.5 / scale - 0.5) of an old pixel along the
row and column directions (imresize's convention: new pixel n sits at old index
(n + 0.5) / scale - 0.5); a new SOPInstanceUID, the given SeriesInstanceUID; Explicit VR Little
Endian, uncompressed; SmallestImagePixelValue/LargestImagePixelValue dropped;
DerivationDescription set; the attributes that say the file is derived and from what
(ImageType DERIVED\\SECONDARY, SeriesDescription and SeriesNumber of their own, the sources:
:mod:`data_prep.io.dicom_derived`), whose Contributing Equipment item naming this project is
also the project's mark (:mod:`data_prep.io.marks`). MONOCHROME1 stays MONOCHROME1. Colour (8-bit RGB or YBR_FULL(_422):
ultrasound, endoscopy, secondary captures) is read as RGB (:func:`colour_frames`) and written as
uncompressed RGB, PlanarConfiguration 0.
"""
import copy
import warnings

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixel_data_handlers.util import apply_modality_lut, convert_color_space
from pydicom.uid import (ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                         generate_uid)
from pydicom.valuerep import DSfloat

from core.errors import DataError
from .dicom_derived import Derivation, mark_derived
from .files import to_stored, write_with
from .marks import drop_old_dicom_mark

__all__ = ["read", "pixel_frames", "is_colour", "colour_frames", "modality_values", "is_monochrome1", "invert_monochrome1",
           "bits_stored", "int_or_none", "linear_values", "rescale", "stored_dtype",
           "new_series_uid", "write"]


# ---------------------------------------------------------------------------------- reading

def read(path):
    """A DICOM image dataset (pixels decoded later); DataError unless it is one."""
    ds = dcmread(str(path), path)
    if "PixelData" not in ds:
        raise DataError(f"{path}: not a DICOM image (no pixel data)")
    return ds


def dcmread(source, path, **kwargs):
    """pydicom.dcmread of ``source`` (a path or an open file) with ``kwargs``, a file without
    the 128-byte preamble too (legal and common: read forced, quietly, as pydicom warns about junk
    tags on non-DICOM files); DataError naming ``path`` when it cannot be read."""
    try:
        return pydicom.dcmread(source, **kwargs)
    except InvalidDicomError:
        if hasattr(source, "seek"):
            source.seek(0)
        return _dcmread_forced(source, path, **kwargs)
    except Exception as exc:  # pydicom raises many types on corrupt files
        raise DataError(f"{path}: cannot read as DICOM ({exc})")


def _dcmread_forced(source, path, **kwargs):
    """dcmread(force=True), quietly: on non-DICOM files it warns about junk tags."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(source, force=True, **kwargs)
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


def pixel_frames(ds, path):
    """The stored pixel values as (frames, H, W); DataError for colour or undecodable data."""
    if is_colour(ds) or _photometric(ds) == "PALETTE COLOR":
        raise DataError(f"{path}: colour DICOM ({_photometric(ds)}) is not grey (8-bit RGB and "
                        "YBR_FULL are read by colour_frames)")
    arr = _pixel_array(ds, path)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3:
        raise DataError(f"{path}: unexpected DICOM pixel array shape {arr.shape}")
    return arr


def _pixel_array(ds, path):
    """pydicom's decoded pixels; DataError naming the transfer syntax when they cannot be."""
    try:
        return ds.pixel_array
    except Exception as exc:  # missing decoder, truncated data, bad tags ...
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise DataError(f"{path}: cannot decode DICOM pixel data (transfer syntax {ts}): {exc}")


def _photometric(ds) -> str:
    return str(ds.get("PhotometricInterpretation", "") or "").strip().upper()


def is_colour(ds) -> bool:
    """More than one sample per pixel (RGB, YBR, ...)."""
    return int(ds.get("SamplesPerPixel", 1) or 1) != 1


COLOUR_PHOTOMETRIC = ("RGB", "YBR_FULL", "YBR_FULL_422")  # what pydicom decodes to 3 samples


def colour_frames(ds, path):
    """An 8-bit colour image's frames as RGB, (frames, H, W, 3) uint8; DataError for other
    colour models (PALETTE COLOR, YBR_ICT/RCT of JPEG 2000 ...) or depths."""
    photometric = _photometric(ds)
    if photometric not in COLOUR_PHOTOMETRIC or int(ds.get("BitsAllocated", 0)) != 8:
        raise DataError(f"{path}: colour DICOM ({photometric}, {ds.get('BitsAllocated')} bits) "
                        f"is not supported; 8-bit {', '.join(COLOUR_PHOTOMETRIC)} is")
    arr = _pixel_array(ds, path)
    if photometric != "RGB":  # pydicom returns YBR as stored (4:2:2 expanded)
        arr = convert_color_space(arr, "YBR_FULL", "RGB")
    arr = arr[np.newaxis] if arr.ndim == 3 else arr
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise DataError(f"{path}: unexpected colour DICOM pixel array shape {arr.shape}")
    return arr


def modality_values(ds, path):
    """:func:`pixel_frames` after the modality LUT (RescaleSlope/Intercept or the LUT sequence),
    for reading only: a LUT sequence cannot be undone when writing (see :func:`linear_values`)."""
    arr = pixel_frames(ds, path)
    try:
        out = apply_modality_lut(arr, ds)
    except Exception as exc:
        raise DataError(f"{path}: bad modality LUT / rescale ({exc})")
    # Identity rescale (slope 1, intercept 0) gives float64; keep the stored
    # dtype so 8-bit data stays uint8 and "auto" picks the "none" rule.
    if out.dtype != arr.dtype and np.array_equal(out, arr):
        out = arr
    return out


def is_monochrome1(ds) -> bool:
    """MONOCHROME1: the minimum value is displayed white."""
    return str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1"


def invert_monochrome1(stack, flags):
    """Flip the slices ``flags`` marks to bright = high: x -> max + min - x (over the whole
    ``stack``, so one series keeps one scale)."""
    if not flags.any():
        return stack
    work = stack.astype(np.float64 if stack.dtype.kind == "f" else np.int64)
    total = work.max() + work.min()  # wide type: no overflow; result stays in [min, max]
    work[flags] = total - work[flags]
    return work.astype(stack.dtype)


def bits_stored(datasets):
    """Largest BitsStored among ``datasets`` (None if none has it)."""
    bits = [int_or_none(ds.get("BitsStored")) for ds in datasets]
    bits = [b for b in bits if b]
    return max(bits) if bits else None


def int_or_none(value):
    """int(value), or None if absent/malformed."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------------- stored values

def linear_values(ds, path):
    """Pixel values (frames, H, W) in float64 after RescaleSlope/Intercept, for a file that
    :func:`write` can store values back into: a Modality LUT Sequence (not invertible) and
    pixels other than 8, 16 or 32 bits are refused, before anything is decoded."""
    if "ModalityLUTSequence" in ds:
        raise DataError(f"{path}: a Modality LUT Sequence cannot be inverted; not supported")
    stored_dtype(ds, path)
    arr = pixel_frames(ds, path)
    slope, intercept = rescale(ds, path)
    return arr.astype(np.float64) * slope + intercept


def rescale(ds, path):
    """(RescaleSlope, RescaleIntercept), (1, 0) when absent; DataError for a zero slope."""
    def number(keyword, default):
        value = ds.get(keyword)
        return default if value is None or value == "" else float(value)
    slope, intercept = number("RescaleSlope", 1.0), number("RescaleIntercept", 0.0)
    if slope == 0:
        raise DataError(f"{path}: RescaleSlope is 0")
    return slope, intercept


def stored_dtype(ds, path):
    """numpy dtype of the stored pixels (BitsAllocated 8/16/32, PixelRepresentation)."""
    bits, signed = int(ds.get("BitsAllocated", 0) or 0), int(ds.get("PixelRepresentation", 0) or 0)
    if bits not in (8, 16, 32):
        raise DataError(f"{path}: BitsAllocated {bits} is not supported (need 8, 16 or 32)")
    return np.dtype(f"{'i' if signed else 'u'}{bits // 8}")


def _stored_range(ds, path):
    """(lo, hi) that BitsStored can hold."""
    dtype = stored_dtype(ds, path)
    bits = int(ds.get("BitsStored", 0) or 0) or dtype.itemsize * 8
    if dtype.kind == "i":
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


# ---------------------------------------------------------------------------------- writing

def new_series_uid():
    """A fresh UID for the series that :func:`write` puts the upscaled files in."""
    return generate_uid()


def write(path, like, values, scale, *, series_uid, description, derivation=None, sources=None,
          used_series_numbers=()) -> None:
    """Write a copy of dataset ``like`` holding ``values`` (frames, H, W; after the modality
    rescale, upscaled by ``scale`` in-plane) to ``path``, atomically; see the module docstring
    for what changes. ``like``'s values must have come from :func:`linear_values`; colour
    ``values`` are (frames, H, W, 3) RGB in 0..255 (:func:`colour_frames`). ``derivation``: what
    was done (in-plane super-resolution by ``scale`` by default); ``sources``: the datasets the
    pixels were computed from (``like`` by default); ``used_series_numbers``: the study's, where
    known (``dicom_derived.series_number``)."""
    source = getattr(like, "filename", None) or path
    out = copy.deepcopy(like)
    derived = (derivation or Derivation(scale), [like] if sources is None else sources,
               used_series_numbers)
    if np.ndim(values) == 4:  # colour: (frames, H, W, RGB), 0..255
        stored = to_stored(values, np.uint8)
        out.PhotometricInterpretation, out.PlanarConfiguration = "RGB", 0
        return _write_copy(path, out, stored, scale, series_uid, description, derived)
    slope, intercept = rescale(like, source)
    stored = to_stored(values, stored_dtype(like, source), *_stored_range(like, source),
                       scaling=(slope, intercept))
    return _write_copy(path, out, stored, scale, series_uid, description, derived)


def _write_copy(path, out, stored, scale, series_uid, description, derived):
    """:func:`write`'s common part: ``out`` (a copy of the input's dataset) with ``stored``
    (frames, H, W[, samples]) as its pixels, the geometry and UIDs moved, marked derived from
    ``derived`` = (derivation, sources, used series numbers), to ``path``."""
    out.Rows, out.Columns = stored.shape[1:3]
    _set_pixel_data(out, stored)
    _scale_geometry(out, scale)
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):
        if keyword in out:  # bounds of the old pixels, no longer true
            delattr(out, keyword)
    out.DerivationDescription = description[:1024]  # an ST value holds 1024 characters at most
    derivation, sources, used = derived
    mark_derived(out, derivation, sources, description, used)
    drop_old_dicom_mark(out)
    _set_uids(out, series_uid)
    # Straight to the file: no in-memory copy of a (possibly 250 MB) dataset.
    write_with(path, lambda tmp: out.save_as(str(tmp), write_like_original=False))


def _set_pixel_data(ds, stored):
    """Native little-endian PixelData (a fresh element: the old one may be encapsulated)."""
    data = np.ascontiguousarray(stored, dtype=stored.dtype.newbyteorder("<")).tobytes()
    data += b"\0" * (len(data) % 2)  # DICOM values have even length
    del ds.PixelData
    ds.add_new(0x7FE00010, "OW" if stored.dtype.itemsize > 1 else "OB", data)


def _first(ds, keyword):
    """The first value of ``keyword`` anywhere in ``ds`` (sequences included), or None."""
    found = []
    ds.walk(lambda _, elem: found.append(elem.value) if elem.keyword == keyword else None)
    return found[0] if found else None


def _scale_geometry(ds, scale):
    """Pixel spacings / scale and ImagePositionPatient on the new first pixel centre, wherever
    they appear (enhanced multi-frame files keep them in functional group sequences)."""
    spacing = _first(ds, "PixelSpacing")
    orientation = _first(ds, "ImageOrientationPatient")
    shift = None
    if spacing is not None and orientation is not None and len(orientation) == 6:
        iop, (row_step, col_step) = np.array(orientation, float), map(float, spacing)
        # IOP[:3] runs along a row (next column, PixelSpacing[1]); IOP[3:] down a column.
        shift = (iop[:3] * col_step + iop[3:] * row_step) * (0.5 / scale - 0.5)

    def fix(_, elem):
        if elem.keyword in ("PixelSpacing", "ImagerPixelSpacing") and elem.value is not None:
            elem.value = [_ds(float(v) / scale) for v in elem.value]
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
