"""DICOM series: group files by SeriesInstanceUID, put slices in order, find their spacing.

Order: ImagePositionPatient projected onto the slice normal (row x column of
ImageOrientationPatient), ascending; else InstanceNumber; else natural file-name order.

Geometry (:func:`check_stack`): the slices of a series are one stack when they share one
orientation and their positions lie on one line along the normal, evenly spaced. A missing slice,
a duplicated position, two interleaved stacks, two orientations or a gantry tilt are not: a
command that places slices by the spacing refuses them (``check_stack`` raises), the others say
what they do instead (they catch the DataError and warn). :func:`check_same_size` refuses a slice
whose Rows/Columns differ from the series'.
"""
from collections import Counter

import numpy as np

from core.errors import DataError, warn
from .dicom import int_or_none
from .files import list_files, natural_key
from .formats import by_name, sniff

__all__ = ["series_files", "group_series", "sort_series", "pixel_spacing", "check_stack",
           "check_even_spacing", "check_same_size", "orientations", "images_per_position",
           "SPACING_TOLERANCE", "ORIENTATION_TOLERANCE", "POSITION_DECIMALS"]

# Relative to the slice spacing: positions are written as rounded decimals (to 0.01 mm or coarser,
# several per slice on an oblique stack), which at 0.5 mm slices is 2 %; a missing slice (100 %),
# a duplicate (100 %) or an interleaved stack (a fraction of a slice) is far above it.
SPACING_TOLERANCE = 0.05
ORIENTATION_TOLERANCE = 1e-3  # direction cosines this close are one orientation (written rounded)
POSITION_DECIMALS = 2  # positions written alike to 0.01 mm are one position (DWI b-values, repeats)


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


# ------------------------------------------------------------------------------ geometry

def check_stack(items, where):
    """The slice spacing (mm) of a sorted series (:func:`sort_series`) whose slices are one stack:
    one ImageOrientationPatient, positions on one line along the slice normal, evenly spaced
    (:func:`check_even_spacing`). DataError, one line starting with ``where``, naming the slices
    that are not. None when there is nothing to check (fewer than two slices, or slices without
    ImagePositionPatient/ImageOrientationPatient)."""
    if len(items) < 2:
        return None
    orientations = [_floats(ds.get("ImageOrientationPatient"), 6) for _, ds in items]
    positions = [_position(ds) for _, ds in items]
    normal = _slice_normal(items[0][1])
    if normal is None or any(v is None for v in orientations + positions):
        return None
    names = [path.name for path, _ in items]
    for name, orientation in zip(names, orientations):
        if np.abs(orientation - orientations[0]).max() > ORIENTATION_TOLERANCE:
            raise DataError(f"{where}: {name} has ImageOrientationPatient {_vector(orientation)}, "
                            f"{names[0]} {_vector(orientations[0])}: two orientations in one series "
                            "(a mixed stack); give a folder with one stack")
    along = [float(np.dot(normal, p)) for p in positions]
    spacing = check_even_spacing(along, names, where)
    for k, p in enumerate(positions):
        shift = np.linalg.norm((p - positions[0]) - normal * (along[k] - along[0]))
        if shift > SPACING_TOLERANCE * spacing:
            raise DataError(f"{where}: slice {k + 1} ({names[k]}) lies {shift:.3g} mm across the "
                            f"slice normal from slice 1 ({names[0]}): the slices are not stacked "
                            "along their normal (a gantry tilt or a shifted stack)")
    return spacing


def check_even_spacing(positions, names, where):
    """The spacing of slice ``positions`` (mm along the normal, ascending; ``names`` say which
    slice each is): (last - first) / (count - 1) when every gap is the median gap within
    SPACING_TOLERANCE; else DataError, one line starting with ``where``, naming the first two
    slices (1-based, in slice order) whose gap is not, and their positions."""
    gaps = np.diff(positions)
    typical = float(np.median(gaps))
    tolerance = SPACING_TOLERANCE * typical
    if typical > 0:
        odd = [k for k, gap in enumerate(gaps) if abs(gap - typical) > tolerance]
    else:  # most positions are duplicated
        odd = [k for k, gap in enumerate(gaps) if gap <= 0]
    if not odd:
        return (positions[-1] - positions[0]) / (len(positions) - 1)
    k = odd[0]
    pair = f"slices {k + 1} and {k + 2} ({names[k]}, {names[k + 1]})"
    if gaps[k] <= max(tolerance, 0):
        what = f"{pair} are both at {positions[k]:.6g} mm along the slice normal"
    else:
        what = (f"{pair} at {positions[k]:.6g} and {positions[k + 1]:.6g} mm along the slice "
                f"normal are {gaps[k]:.3g} mm apart")
    more = len(odd) - 1
    differ = "gap differs" if more == 1 else "gaps differ"
    usual = (f"the others {typical:.3g} mm" if not more else
             f"{more} more {differ} from the median {typical:.3g} mm")
    raise DataError(f"{where}: {what}, {usual}: the slices are not evenly spaced (a missing "
                    "slice, a duplicated position or a mixed stack)")


def check_same_size(items, where):
    """DataError, one line naming the first slice whose Rows x Columns differ from the size most
    slices of ``items`` [(path, dataset)] have."""
    sizes = [(ds.get("Columns"), ds.get("Rows")) for _, ds in items]
    common, count = Counter(sizes).most_common(1)[0]
    for (path, _), size in zip(items, sizes):
        if size != common:
            raise DataError(f"{where}: {path.name} is {_size(size)} pixels where the other "
                            f"{count} slices are {_size(common)}: a slice of another size in one "
                            "series; give a folder of one size")


def _size(size):
    return "x".join("?" if v is None else str(v) for v in size)


def _vector(values):
    return "\\".join(f"{v:.6g}" for v in values)


# ------------------------------------------------------------------- header-only checks
# For planning a cohort from headers alone (data_prep.cohort): ``items`` may hold any objects
# with a dataset's ``get`` (pydicom datasets, data_prep.cohort.walk.FileInfo records).

def orientations(items):
    """The distinct ImageOrientationPatient vectors (within ORIENTATION_TOLERANCE) of
    (path, dataset) pairs, in order of first appearance; files without one are not counted.
    More than one: the series mixes stacks (a localizer's three planes)."""
    found = []
    for _, ds in items:
        iop = _floats(ds.get("ImageOrientationPatient"), 6)
        if iop is not None and all(np.abs(iop - f).max() > ORIENTATION_TOLERANCE for f in found):
            found.append(iop)
    return found


def images_per_position(items):
    """(most images at one ImagePositionPatient, number of distinct positions) of (path, dataset)
    pairs; files without a position are not counted ((0, 0) when none has one). More than one image
    at a position: several images of one place (DWI b-values, repeats), not one stack."""
    counts = Counter()
    for _, ds in items:
        p = _position(ds)
        if p is not None:
            counts[tuple(np.round(p, POSITION_DECIMALS) + 0.0)] += 1
    return (max(counts.values()), len(counts)) if counts else (0, 0)
