"""NIfTI-1/-2 pairs (``.hdr`` header + ``.img`` voxels: SPM's and FSL's older default, still written
by many pipelines), read and written as :mod:`data_prep.io.nifti` does single files.

A pair is named by either of its files; writing one name writes both, built in a temporary folder
beside them and renamed into place (voxels first, the header last): a failure leaves neither.
Analyze 7.5 headers (a ``.hdr`` without NIfTI's ``ni1``/``ni2`` magic) are refused: they carry no
orientation, and readers disagree on the left-right flip."""
import os
import shutil
from pathlib import Path

import nibabel as nib

from core.atomic import temp_dir_beside
from core.errors import DataError
from . import nifti
from .volume import Volume

__all__ = ["read", "write", "data_files", "EXTENSIONS"]

EXTENSIONS = (".hdr", ".img")
PAIR_CLASSES = (nib.Nifti1Pair, nib.Nifti2Pair)


def read(path) -> Volume:
    """The pair as a :class:`Volume` (values after scl_slope/scl_inter, best affine)."""
    try:
        img = nib.load(str(path))
    except Exception as exc:  # a missing partner file, a truncated .img, ...
        raise DataError(f"{path}: cannot read NIfTI pair ({exc})")
    if not isinstance(img, PAIR_CLASSES):
        raise DataError(f"{path}: an Analyze 7.5 header (no NIfTI magic), whose orientation is "
                        "ambiguous: convert it to NIfTI first (SPM, FSL or nibabel)")
    return nifti.read(path)  # the same reading as a single file, header and data alike


def write(path, like, values, planes, scale) -> None:
    """Write the pair named by ``path`` (``.hdr`` or ``.img``) like ``like``; see
    :func:`data_prep.io.nifti.write` for what is kept and how the geometry moves."""
    path = Path(path)
    new = nifti.upscaled_like(like, values, planes, scale)
    partner = data_files(path)[0]
    header, voxels = (path, partner) if path.suffix.lower() == ".hdr" else (partner, path)
    tmp = temp_dir_beside(path)
    try:
        new.to_filename(str(tmp / header.name))
        os.replace(tmp / voxels.name, voxels)
        os.replace(tmp / header.name, header)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def data_files(path):
    """The other file of the pair: ``x.img`` for ``x.hdr`` and the reverse (same case)."""
    path = Path(path)
    other = {".hdr": ".img", ".img": ".hdr"}[path.suffix.lower()]
    return [path.with_suffix(other.upper() if path.suffix.isupper() else other)]
