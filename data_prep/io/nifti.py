"""NIfTI-1/-2 single files (.nii, .nii.gz): read into a :class:`Volume`, write an upscaled copy."""
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from core.errors import DataError
from .files import to_stored, write_bytes
from .marks import mark_nifti
from .volume import Volume, upscaled_affine

__all__ = ["read", "write", "upscaled_like"]

# Single files and .hdr/.img pairs (data_prep/io/nifti_pair.py), NIfTI-1 and -2
NIFTI_CLASSES = (nib.Nifti1Image, nib.Nifti2Image, nib.Nifti1Pair, nib.Nifti2Pair)


def read(path) -> Volume:
    """The file as a :class:`Volume`: values after scl_slope/scl_inter (the stored dtype kept
    when the file is unscaled), its best affine (sform, else qform). A NIfTI pair reads the
    same; an Analyze 7.5 header is refused. DataError if unreadable."""
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel/gzip raise many types on bad files (a pair's missing half)
        raise DataError(f"{path}: cannot read NIfTI ({exc})")
    if not isinstance(img, NIFTI_CLASSES):
        if isinstance(img, nib.AnalyzeImage):  # a .hdr without NIfTI's magic
            raise DataError(f"{path}: an Analyze 7.5 header (no NIfTI magic), whose orientation is "
                            "ambiguous: convert it to NIfTI first (SPM, FSL or nibabel)")
        raise DataError(f"{path}: not a NIfTI image")
    try:
        values = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise DataError(f"{path}: cannot read NIfTI ({exc})")
    slope, inter = (float(getattr(img.dataobj, k, d)) for k, d in (("slope", 1), ("inter", 0)))
    return Volume(values, img.affine, img.get_data_dtype(), (slope, inter), img)


def write(path, like, values, planes, scale) -> None:
    """Write ``values`` (``like``'s voxel order, upscaled by ``scale`` along voxel axes
    ``planes``) as a NIfTI file of ``like``'s class and header, atomically.

    Integer data keeps its dtype and scl_slope/scl_inter (stored values restored, rounded half
    away from zero and clipped); float data is written as float32. qform and sform are both
    moved by :func:`upscaled_affine` (codes kept) and the zooms of ``planes`` divided by
    ``scale``. The voxel order is kept: nothing is reoriented. A name ending in ``.gz`` is
    gzip-compressed. The header carries this project's mark (a comment extension:
    :mod:`data_prep.io.marks`).
    """
    path = Path(path)
    payload = upscaled_like(like, values, planes, scale).to_bytes()
    if path.name.lower().endswith(".gz"):
        payload = gzip.compress(payload)
    write_bytes(path, payload)


def upscaled_like(like, values, planes, scale):
    """The nibabel image :func:`write` writes: ``values`` in ``like``'s stored type, class and
    header, the geometry moved for the upscaling (a NIfTI pair's writer uses it too)."""
    raw = like.stored
    if raw.kind == "f":
        data, scaling = np.asarray(values).astype(np.float32), None
    else:
        data, scaling = to_stored(values, raw, scaling=like.scaling), like.scaling
    return _nifti_like(like.native, data, planes, scale, scaling)


def _nifti_like(img, data, planes, scale, scaling):
    """A NIfTI image of ``img``'s class and header holding ``data``, with qform/sform
    upscaled along ``planes`` (codes kept), zooms / ``scale`` and the given (slope, inter)."""
    new = type(img)(data, None, header=img.header.copy())
    qform, qcode = img.get_qform(coded=True)
    sform, scode = img.get_sform(coded=True)
    new.set_qform(None if qform is None else upscaled_affine(qform, planes, scale), code=int(qcode))
    new.set_sform(None if sform is None else upscaled_affine(sform, planes, scale), code=int(scode))
    zooms = list(img.header.get_zooms())
    for d in planes:
        zooms[d] = zooms[d] / scale
    new.header.set_zooms(zooms)
    new.set_data_dtype(data.dtype)
    if scaling is not None and scaling != (1.0, 0.0):
        new.header.set_slope_inter(*scaling)  # data holds stored values: keep their scaling
    mark_nifti(new.header, f"x{scale:g} along voxel axes {', '.join(map(str, planes))}")
    return new
