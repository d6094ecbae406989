"""What every 3-D format with a voxel-to-world affine shares (NIfTI, NRRD, MetaImage).

A format module of kind "volume" reads into a :class:`Volume` and writes from one; slicing along
RAS+ axes, finding the voxel axis closest to a RAS+ axis and moving the affine for an upscaled
volume depend only on the affine, so they live here, once.
"""
import warnings
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from core.errors import DataError

__all__ = ["Volume", "as_3d", "closest_canonical", "voxel_axis", "upscaled_affine"]


@dataclass
class Volume:
    """A volume as read from its file.

    values: voxel values after the file's own scaling (e.g. NIfTI scl_slope/scl_inter); an
        unscaled file keeps its stored dtype, so 8-bit data stays uint8.
    affine: 4x4 voxel-to-world matrix (RAS+ millimetres, as nibabel's).
    stored: the dtype the file stores its voxels in.
    scaling: (slope, inter) with values = stored * slope + inter; (1.0, 0.0) when unscaled.
    native: the format's own image/header object, for its writer to copy.
    """
    values: np.ndarray
    affine: np.ndarray
    stored: np.dtype
    scaling: tuple
    native: object


def as_3d(data, source):
    """Drop trailing singleton dimensions (4-D with one volume), 2-D -> one slice."""
    shape = data.shape
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., np.newaxis]
    if data.ndim != 3:
        raise DataError(f"{source}: volume shape {shape} is not 3-D "
                        "(4-D is accepted only with a single volume)")
    return data


def closest_canonical(data, affine):
    """(``data`` reordered/flipped to the closest RAS+ orientation, voxel sizes in mm).

    nibabel does the reorientation whatever the file's format: the image built here only
    carries ``data`` and ``affine`` (its zooms come from the affine).
    """
    canon = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    zooms = [float(z) for z in canon.header.get_zooms()[:3]]
    return np.asanyarray(canon.dataobj), zooms


def voxel_axis(affine, ras_axis, source) -> int:
    """The voxel axis closest to RAS+ axis ``ras_axis`` (0 R, 1 A, 2 S, as data_prep counts)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a degenerate affine: reported below
            found = np.flatnonzero(nib.io_orientation(affine)[:, 0] == ras_axis)
    except (np.linalg.LinAlgError, ValueError):
        found = np.array([])
    if found.size != 1:
        raise DataError(f"{source}: the affine tells no voxel axis for RAS+ axis {ras_axis}")
    return int(found[0])


def upscaled_affine(affine, axes, scale):
    """A voxel-to-world affine for a volume upscaled by ``scale`` along ``axes``: those columns
    divided by ``scale``, the origin moved so new index n lies at old index
    (n + 0.5) / scale - 0.5 (imresize's convention: the image keeps its extent)."""
    affine = np.asarray(affine, dtype=np.float64)
    new = affine.copy()
    for a in axes:
        new[:3, 3] += affine[:3, a] * (0.5 / scale - 0.5)
        new[:3, a] = affine[:3, a] / scale
    return new
