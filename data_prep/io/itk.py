"""What NRRD and MetaImage share: both are read and written through SimpleITK, the Insight
Toolkit's Python wrapping (``SimpleITK`` from PyPI, pinned in tools/setup/requirements.txt).

ITK keeps a volume's geometry as spacing, origin and a direction matrix in LPS millimetres
(NRRD files in RAS "space" are converted by ITK when read); :func:`read` turns them into the
RAS+ voxel-to-world affine that :class:`Volume` holds (as NIfTI's), and :func:`write` moves them
for an upscaled volume as NIfTI's writer does: the spacing of the upscaled axes / scale, the
origin on the new first voxel centre (imresize's convention, :func:`upscaled_affine`), the
direction kept. Voxel values, the pixel type and the file's own key/value fields are kept, and
the field ``medsr_caffe`` marks the file as this project's (:mod:`data_prep.io.marks`); the
file is compressed if the one read was. 2-D files are read as one slice and written back 2-D.

SimpleITK is imported on first use: a .venv without it can still do everything else, and a
NRRD file then gets one line saying what to install.
"""
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.atomic import staging_dir
from core.errors import DataError
from .files import head, to_stored
from .marks import ITK_KEY, mark_text
from .volume import Volume, upscaled_affine

__all__ = ["Header", "read", "write", "header_text", "lps_affine"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_OWN_KEYS = ("ITK_", "NRRD_")  # ITK's bookkeeping: the writer sets its own


@dataclass(frozen=True)
class Header:
    """What a written copy takes from the file read (ITK's view of it, LPS).

    dimension: 2 or 3; spacing, origin: one value per axis (mm); direction: row-major
    dimension x dimension matrix whose columns are the axes' unit vectors; metadata: the file's
    key/value fields; compressed: whether its voxel data was compressed.
    """
    dimension: int
    spacing: tuple
    origin: tuple
    direction: tuple
    metadata: dict
    compressed: bool


def _sitk():
    try:
        import SimpleITK
    except ImportError:
        raise DataError("NRRD and MetaImage files need the SimpleITK package; run 'make setup' "
                        "(it installs tools/setup/requirements.txt into .venv)") from None
    return SimpleITK


def _reason(exc):
    """ITK's exceptions run to several lines of source locations: keep the description."""
    text = " ".join(str(exc).split())
    found = re.search(r"(?:Description|ERROR):\s*(.*?)(?:\s+\w+Exception\b|$)", text)
    return (found.group(1) if found else text)[:300]


def header_text(path, limit=1 << 16) -> str:
    """The file's first ``limit`` bytes as text (both formats begin with a text header)."""
    return head(path, limit).decode("latin-1")


def read(path, title, image_io, compressed) -> Volume:
    """A 2-D or 3-D scalar image as a :class:`Volume` (values in voxel order x, y, z as nibabel
    gives NIfTI's, RAS+ affine, no intensity scaling: neither format has one). DataError for
    unreadable files, vector/RGB pixels, complex pixels or other dimensions."""
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetImageIO(image_io)
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        dim, comps = reader.GetDimension(), reader.GetNumberOfComponents()
        if dim not in (2, 3):
            raise DataError(f"{path}: {title} image of dimension {dim}; only 2-D and 3-D are "
                            "supported")
        if comps != 1:
            raise DataError(f"{path}: {title} image with {comps} components per voxel "
                            "(vector or colour); only scalar images are supported")
        image = reader.Execute()
    except RuntimeError as exc:
        raise DataError(f"{path}: cannot read {title} ({_reason(exc)})") from None
    array = sitk.GetArrayFromImage(image)  # index order reversed: (z, y, x)
    if array.dtype.kind not in "uif":
        raise DataError(f"{path}: {title} pixel type {array.dtype} is not supported "
                        "(need real numbers)")
    header = Header(dim, tuple(image.GetSpacing()), tuple(image.GetOrigin()),
                    tuple(image.GetDirection()),
                    {k: image.GetMetaData(k) for k in image.GetMetaDataKeys()}, compressed)
    return Volume(array.T, LPS_TO_RAS @ lps_affine(header), array.dtype, (1.0, 0.0), header)


def lps_affine(header):
    """4x4 voxel-to-LPS matrix of a :class:`Header` (a 2-D image as one slice, unit depth)."""
    d = header.dimension
    affine = np.eye(4)
    affine[:d, :d] = np.reshape(header.direction, (d, d)) * np.asarray(header.spacing)
    affine[:d, 3] = header.origin
    return affine


def write(path, like, values, planes, scale, title, image_io) -> None:
    """Write ``values`` (``like``'s voxel order, upscaled by ``scale`` along voxel axes
    ``planes``) in ``like``'s pixel type and geometry moved for the upscaling; see the module
    docstring. Built in a temporary folder beside ``path`` and renamed into place (a detached
    data file first, then the header): a failure leaves nothing."""
    sitk = _sitk()
    header, path = like.native, Path(path)
    # (z, y, x) C order for ITK, computed straight into the stored type: no full-size float copy.
    data = to_stored(np.asarray(values).T, like.stored)
    if data.ndim != header.dimension:
        raise ValueError(f"{title} write: values of shape {data.shape} for a "
                         f"{header.dimension}-D image")
    image = sitk.GetImageFromArray(data)
    del data
    spacing = [s / scale if d in planes else s for d, s in enumerate(header.spacing)]
    origin = upscaled_affine(lps_affine(header), planes, scale)[:header.dimension, 3]
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    image.SetDirection(header.direction)
    for key, value in header.metadata.items():
        if not key.startswith(_OWN_KEYS):
            image.SetMetaData(key, value)
    image.SetMetaData(ITK_KEY, mark_text(f"x{scale:g} along voxel axes {', '.join(map(str, planes))}"))
    with staging_dir(path) as tmp:
        writer = sitk.ImageFileWriter()
        writer.SetImageIO(image_io)
        writer.SetFileName(str(tmp / path.name))
        writer.SetUseCompression(header.compressed)
        try:
            writer.Execute(image)
        except RuntimeError as exc:
            raise DataError(f"{path}: cannot write {title} ({_reason(exc)})") from None
        files = sorted(tmp.iterdir(), key=lambda f: f.name == path.name)  # the header last
        for f in files:
            os.replace(f, path.parent / f.name)
