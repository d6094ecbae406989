"""NIfTI-1/-2 pairs (``.hdr`` header + ``.img`` voxels: SPM's and FSL's older default, still written
by many pipelines), read and written as :mod:`data_prep.io.nifti` does single files.

A pair is named by either of its files; writing one name writes both, built in a temporary folder
beside them and renamed into place (voxels first, the header last): a failure leaves neither.
Analyze 7.5 headers (a ``.hdr`` without NIfTI's ``ni1``/``ni2`` magic) are refused: they carry no
orientation, and readers disagree on the left-right flip."""
import os
from pathlib import Path

from core.atomic import staging_dir
from . import nifti

__all__ = ["read", "write", "data_files", "EXTENSIONS"]

EXTENSIONS = (".hdr", ".img")
read = nifti.read  # nibabel loads a pair by either name; the Analyze refusal is there too


def write(path, like, values, planes, scale) -> None:
    """Write the pair named by ``path`` (``.hdr`` or ``.img``) like ``like``; see
    :func:`data_prep.io.nifti.write` for what is kept and how the geometry moves."""
    path = Path(path)
    new = nifti.upscaled_like(like, values, planes, scale)
    partner = data_files(path)[0]
    header, voxels = (path, partner) if path.suffix.lower() == ".hdr" else (partner, path)
    with staging_dir(path) as tmp:
        new.to_filename(str(tmp / header.name))
        os.replace(tmp / voxels.name, voxels)
        os.replace(tmp / header.name, header)


def data_files(path):
    """The other file of the pair: ``x.img`` for ``x.hdr`` and the reverse (same case)."""
    path = Path(path)
    other = {".hdr": ".img", ".img": ".hdr"}[path.suffix.lower()]
    return [path.with_suffix(other.upper() if path.suffix.isupper() else other)]
