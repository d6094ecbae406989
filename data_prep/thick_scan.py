"""A thick-slice scan as through-plane super-resolution needs it: voxel values, the voxel-to-world
affine, which voxel axis is the thick one, the in-plane and slice spacings and the slice
thickness; and writing the result back in the input's format with the slice axis refined.

Volumes (NIfTI, NIfTI pair, NRRD, MetaImage) go through their format's reader and writer
(``data_prep.io``; the writer moves the geometry as imresize places pixels: spacing / factor,
the origin on the new first slice centre, direction kept). A DICOM series is read slice by slice
(they must be one evenly spaced stack, ``dicom_series.check_stack``: the output's slices are placed
by that one spacing) and written as a new series, one file per new slice, each a copy of the thick
slice it lies in with its position, thickness, spacing, instance number and UIDs made new, marked
derived from every slice of the input series (``data_prep.io.dicom_derived``: each output slice is
computed from planes that cross the whole stack, through an intensity window of the whole scan).
"""
import copy
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener
from pydicom.valuerep import DSfloat

from core.atomic import atomic_dir
from core.errors import DataError
from .intensity import check_numeric
from .io import dicom
from .io.dicom_derived import Derivation
from .io.dicom_series import (check_same_size, check_stack, group_series, pixel_spacing,
                               series_files, sort_series)
from .io.formats import by_name, format_of

SAME_SPACING = 0.01  # relative: in-plane spacings this close are one (scanners round to 1e-4 mm)
INTEGER_FACTOR = 0.02  # relative: a spacing ratio this close to an integer is that integer
MIN_SLICES = 4  # MATLAB's cubic has 4 taps: fewer slices are all border along the slice axis
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Scan:
    """values: float64 3-D in the file's voxel order (a DICOM series: rows, columns, slices);
    affine: voxel-to-world RAS+ mm; axis: the thick voxel axis; spacing: voxel sizes (mm) of the
    three axes; thickness: the slice thickness (mm; the slice spacing where the file has none);
    kind: the format row's name ("dicom" for a series); source: what the writer copies (a
    ``Volume``, or the series' sorted [(path, dataset)])."""
    values: np.ndarray
    affine: np.ndarray
    axis: int
    spacing: tuple
    thickness: float
    kind: str
    source: object

    @property
    def in_plane(self):
        return min(s for a, s in enumerate(self.spacing) if a != self.axis)

    def factor(self, requested=None):
        """The through-plane factor: ``requested``, or slice spacing / in-plane spacing when
        that is an integer (within INTEGER_FACTOR); DataError otherwise."""
        ratio = self.spacing[self.axis] / self.in_plane
        if requested is None:
            factor = round(ratio)
            if abs(ratio - factor) > INTEGER_FACTOR * ratio:
                raise DataError(f"slice spacing / in-plane spacing is {ratio:.3g}, not an integer: the "
                                f"method refines slices by an integer factor; give one (FACTOR=N, "
                                f"--factor N) and the output's slice spacing is {self.spacing[self.axis]:g} / N")
            requested = factor
        if requested < 2:
            raise DataError(f"slice spacing {self.spacing[self.axis]:g} mm is the in-plane "
                            f"{self.in_plane:g} mm (factor {requested}): an isotropic volume has no thick "
                            "slices to refine (make upscale refines slices in-plane)")
        return int(requested)


def read_scan(path):
    """The scan at ``path`` (a volume file or a DICOM series folder); DataError with one line
    for what has no thick slices to refine: a 2-D image, a 4-D volume, in-plane pixels that
    are not square, fewer than MIN_SLICES slices; and for geometry that would misplace the
    output's slices: a series that is not one evenly spaced stack (``check_stack``: a missing
    slice, a duplicated position, a mixed stack), a slice of another size, a spacing or
    thickness that is not a positive number (PixelSpacing, SliceThickness, a NIfTI pixdim)."""
    path = Path(path)
    if path.is_dir():
        scan = _read_series(path)
    else:
        fmt = format_of(path)
        if fmt.kind != "volume":
            raise DataError(f"{path}: a single {fmt.title} image is 2-D: through-plane super-resolution "
                            "needs a volume (a NIfTI, NRRD or MetaImage file, or a DICOM series folder)")
        scan = _read_volume(path, fmt)
    _check(scan, path)
    return scan


def _read_volume(path, fmt):
    with _nibabel_quiet():  # what it repairs in a NIfTI header, _stored_pixdim refuses in one line
        vol = fmt.read(path)
    values = np.asarray(vol.values)
    while values.ndim > 3 and values.shape[-1] == 1:
        values = values[..., 0]
    if values.ndim != 3 or min(values.shape) < 2:
        what = "4-D (several volumes)" if values.ndim > 3 else "2-D (one slice)"
        raise DataError(f"{path}: the {fmt.title} volume of {'x'.join(map(str, values.shape))} voxels "
                        f"is {what}; through-plane super-resolution needs one 3-D volume")
    pixdim = _stored_pixdim(vol.native)
    for d in range(1, 4):
        if pixdim is not None and not (np.isfinite(pixdim[d]) and pixdim[d] > 0):
            raise DataError(f"{path}: pixdim[{d}] is {pixdim[d]:g} in the {fmt.title} header: the "
                            f"voxel size along axis {d - 1} must be a positive number of mm")
    values = check_numeric(values, path, nonfinite=True).astype(np.float64)
    affine = np.asarray(vol.affine, dtype=np.float64)
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    if not all(np.isfinite(s) and s > 0 for s in spacing):  # a header's zero or NaN voxel size
        raise DataError(f"{path}: voxel spacing {_listed(spacing)} mm (from the {fmt.title} "
                        "header's affine): every voxel size must be a positive number")
    axis = int(np.argmax(spacing))
    return Scan(values, affine, axis, spacing, spacing[axis], fmt.name, vol)


@contextmanager
def _nibabel_quiet():
    """nibabel logs each header field it repairs on load (a zero pixdim read as 1) on stderr."""
    logger = logging.getLogger("nibabel.global")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _stored_pixdim(native):
    """A NIfTI header's pixdim as the file stores it (nibabel's loaded header has a zero replaced
    by 1 and a negative by its absolute value: guesses, which would place the slices); None for
    the other formats."""
    if not isinstance(native, nib.Nifti1Pair):  # every NIfTI class, single file or pair, -1 or -2
        return None
    files = native.file_map  # a pair's header is its own file
    with ImageOpener(files["header" if "header" in files else "image"].filename) as f:
        return type(native.header).from_fileobj(f, check=False)["pixdim"]


def _read_series(folder):
    items = [(p, dicom.read(p)) for p in series_files(folder)]
    if len(group_series(items)) > 1:
        raise DataError(f"{folder}: holds several DICOM series; give a folder with one series")
    items, key, _ = sort_series(items)
    if len(items) < 2:
        raise DataError(f"{folder}: one DICOM file: through-plane super-resolution needs a series "
                        "of single-frame slices")
    if key != "ImagePositionPatient":
        raise DataError(f"{folder}: the slices have no ImagePositionPatient/ImageOrientationPatient "
                        "to place them: the slice spacing is unknown")
    check_same_size(items, folder)
    gap = check_stack(items, folder)  # the output places its slices by this spacing
    rows, cols = _pixel_spacing(items)
    thickness = _slice_thickness(items[0], gap)
    frames = [dicom.linear_values(ds, p) for p, ds in items]
    for (path, _), f in zip(items, frames):
        if len(f) != 1:
            raise DataError(f"{path}: a multi-frame file ({len(f)} frames): through-plane "
                            "super-resolution needs a series of single-frame slices")
    first = items[0][1]
    iop = np.array([float(v) for v in first.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    affine = np.eye(4)  # voxel (row, column, slice) -> LPS, then RAS
    affine[:3, 0], affine[:3, 1] = iop[3:] * rows, iop[:3] * cols
    affine[:3, 2] = normal / np.linalg.norm(normal) * gap
    affine[:3, 3] = [float(v) for v in first.ImagePositionPatient]
    values = np.stack([check_numeric(f[0], p, nonfinite=True) for (p, _), f in zip(items, frames)], axis=2)
    return Scan(values.astype(np.float64), LPS_TO_RAS @ affine, 2, (rows, cols, gap), thickness,
                "dicom", items)


def _pixel_spacing(items):
    """(row, column) spacing in mm, the same on every slice; DataError naming the slice and the
    value that is missing, not a positive number, or another slice's."""
    spacings = [pixel_spacing(ds) for _, ds in items]
    for (path, _), spacing in zip(items, spacings):
        if spacing is None:
            raise DataError(f"{path}: no PixelSpacing: the in-plane spacing is unknown")
        if not all(np.isfinite(v) and v > 0 for v in spacing):
            raise DataError(f"{path}: PixelSpacing {_listed(spacing)} mm: a spacing must be a "
                            "positive number")
        if not np.allclose(spacing, spacings[0], rtol=SAME_SPACING, atol=0):
            raise DataError(f"{path}: PixelSpacing {_listed(spacing)} mm where {items[0][0].name} "
                            f"has {_listed(spacings[0])} mm: slices of two spacings in one series")
    return spacings[0]


def _slice_thickness(item, gap):
    """SliceThickness (mm) of the first slice, the spacing where it is empty or absent; DataError
    naming the file and the value when it is not a positive number."""
    path, ds = item
    value = ds.get("SliceThickness")
    if value is None or str(value).strip() == "":
        return gap
    try:
        thickness = float(value)
    except (TypeError, ValueError):
        thickness = float("nan")
    if not (np.isfinite(thickness) and thickness > 0):
        raise DataError(f"{path}: SliceThickness {str(value).strip()}: the slice thickness must be "
                        "a positive number of mm")
    return thickness


def _listed(values):
    return " x ".join(f"{v:g}" for v in values)


def _check(scan, path):
    plane = [s for a, s in enumerate(scan.spacing) if a != scan.axis]
    if abs(plane[0] - plane[1]) > SAME_SPACING * max(plane):
        raise DataError(f"{path}: in-plane pixels of {plane[0]:g} x {plane[1]:g} mm are not square: "
                        "the in-plane slices cannot stand in for the through-plane resolution")
    if scan.values.shape[scan.axis] < MIN_SLICES:
        raise DataError(f"{path}: {scan.values.shape[scan.axis]} slices along the thick axis: the "
                        f"interpolation between slices needs at least {MIN_SLICES}")


def refined_affine(affine, axis, factor):
    """The affine of the output: column ``axis`` / ``factor``, the origin on the new first slice
    centre (new slice n at old index (n + 0.5) / factor - 0.5: the slab keeps its extent)."""
    new = np.array(affine, dtype=np.float64)
    new[:3, 3] += new[:3, axis] * (0.5 / factor - 0.5)
    new[:3, axis] /= factor
    return new


def write_scan(dst, scan, values, factor, description, used_series_numbers=()):
    """Write ``values`` (the refined volume, ``scan``'s voxel order) to ``dst`` in ``scan``'s
    format: a volume file through its writer, a DICOM series as a new series folder (its
    SeriesNumber none of ``used_series_numbers``, the study's where known)."""
    if scan.kind != "dicom":
        return by_name(scan.kind).write(dst, scan.source, values, (scan.axis,), factor)
    uid = dicom.new_series_uid()
    derivation, sources = Derivation(factor, through_plane=True), [ds for _, ds in scan.source]
    with atomic_dir(Path(dst)) as tmp:
        for n in range(values.shape[2]):
            like = _slice_like(scan, n, factor)
            dicom.write(tmp / f"{n + 1:04d}.dcm", like, values[None, :, :, n], 1,
                        series_uid=uid, description=description, derivation=derivation,
                        sources=sources, used_series_numbers=used_series_numbers)


def _slice_like(scan, n, factor):
    """The dataset new slice ``n`` is written from: the thick slice it lies in, with its
    position, thickness, spacing and numbers made true for the new slice."""
    _, ds = scan.source[n // factor]
    like = copy.deepcopy(ds)
    lps = np.linalg.inv(LPS_TO_RAS) @ refined_affine(scan.affine, 2, factor) @ [0, 0, n, 1]
    like.ImagePositionPatient = [dicom_ds(v) for v in lps[:3]]
    like.SliceThickness = dicom_ds(scan.thickness / factor)
    if "SpacingBetweenSlices" in like:
        like.SpacingBetweenSlices = dicom_ds(scan.spacing[2] / factor)
    if "SliceLocation" in like:  # along the normal, as the scanner wrote it: moved by the same step
        step = scan.spacing[2] * ((n + 0.5) / factor - 0.5 - n // factor)
        like.SliceLocation = dicom_ds(float(like.SliceLocation) + step)
    like.InstanceNumber = n + 1
    return like


def dicom_ds(value):
    """A DICOM DS (16 characters at most)."""
    return DSfloat(float(value), auto_format=True)
