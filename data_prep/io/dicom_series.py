"""DICOM series: group files by SeriesInstanceUID, put slices in order, find their spacing.

Order: ImagePositionPatient projected onto the slice normal (row x column of
ImageOrientationPatient), ascending; else InstanceNumber; else natural file-name order.
"""
import numpy as np

from core.errors import DataError, warn
from .dicom import int_or_none
from .files import list_files, natural_key
from .formats import by_name, sniff

__all__ = ["series_files", "group_series", "sort_series", "pixel_spacing"]


def series_files(folder):
    """The DICOM files of ``folder`` in natural name order; other files are skipped with a
    warning. DataError if there are none."""
    dicoms = []
    for f in list_files(folder):
        name = sniff(f)
        if name is not None and by_name(name).kind == "dicom":
            dicoms.append(f)
        else:
            warn(f"{f}: not a DICOM file; skipped")
    if not dicoms:
        raise DataError(f"{folder}: no DICOM files (subfolders are not searched)")
    return dicoms


def group_series(loaded):
    """{SeriesInstanceUID ("" when absent): [(path, dataset), ...]} in the order given."""
    by_uid = {}
    for path, ds in loaded:
        by_uid.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((path, ds))
    return by_uid


def sort_series(items):
    """Sort (path, dataset) pairs of one series.

    Returns ``(sorted pairs, name of the sort key, slice spacing in mm or None)``; the spacing
    is the median gap along the slice normal, known only when positions order the slices.
    """
    if len(items) == 1:
        return items, "frame order", None
    normal = _slice_normal(items[0][1])
    positions = [_position(ds) for _, ds in items]
    if normal is not None and all(p is not None for p in positions):
        keys = [float(np.dot(normal, p)) for p in positions]
        order = sorted(range(len(items)), key=lambda i: (keys[i], natural_key(items[i][0])))
        gaps = np.diff([keys[i] for i in order])
        return [items[i] for i in order], "ImagePositionPatient", float(np.median(gaps))
    numbers = [int_or_none(ds.get("InstanceNumber")) for _, ds in items]
    if all(n is not None for n in numbers):
        order = sorted(range(len(items)), key=lambda i: (numbers[i], natural_key(items[i][0])))
        return [items[i] for i in order], "InstanceNumber", None
    return sorted(items, key=lambda it: natural_key(it[0])), "filename", None


def pixel_spacing(ds):
    """[row, col] spacing in mm: PixelSpacing, ImagerPixelSpacing or the enhanced multi-frame
    shared functional group; None if unknown."""
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


def _floats(value, n):
    """An array of n floats from a DICOM multi-value, or None if absent/malformed."""
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
