"""The format registry: one table, :data:`FORMATS`, naming every file format and its reader/writer.

Adding a format is one module with ``read`` and ``write`` plus one ``Format`` row below;
data preparation (``data_prep.readers``), scoring and upscaling find it here. What ``read``
returns and how ``write`` is called depends on the row's ``kind``:

``"volume"``  a 3-D array with a voxel-to-world affine (NIfTI, NRRD, MetaImage).
    ``read(path) -> data_prep.io.volume.Volume``;
    ``write(path, like, values, planes, scale)``: ``values`` in ``like``'s voxel order,
    upscaled by ``scale`` along voxel axes ``planes``; the writer moves the geometry.
``"dicom"``  one DICOM file (a series is a folder of them).
    ``read(path) -> pydicom Dataset``;
    ``write(path, like, values, scale, *, series_uid, description)``.
``"image"``  a 2-D picture.
    ``read(path) -> array`` (grey, or colour in BGR(A) order);
    ``write(path, values, dtype)``.

Detection (:func:`sniff`): a row's magic bytes decide first (e.g. "DICM" at offset 128 even in
a file named .png), then its extensions (in table order), and a name with no extension or a
numeric one ("1.2.840....7") goes to the row with ``bare_names`` (DICOM files are often named
by UID or "IM0001").
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.errors import DataError
from . import dicom, images, nifti, nifti_pair
from .itk_formats import metaimage, nrrd
from .files import head

__all__ = ["Format", "FORMATS", "SUPPORTED", "IMAGE_EXTS", "by_name", "sniff", "format_of"]


@dataclass(frozen=True)
class Format:
    """One row of the registry.

    name: what callers and reports call it ("dicom", "nifti", "image").
    kind: "volume", "dicom" or "image" (see the module docstring).
    title: its name in messages ("NIfTI" in "--out for a NIfTI file must end in ...").
    label: its entry in :data:`SUPPORTED`.
    extensions: lower-case file name endings (".nii.gz" is one ending).
    magic: ((offset, bytes), ...) signatures at the start of the file.
    read, write: the format module's functions.
    bare_names: names without an extension (or with a numeric one) are this format.
    data_files: ``data_files(path)`` lists the files besides ``path`` that writing ``path``
        creates (a detached header's voxel data), for the writer's caller to check; None: none.
    """
    name: str
    kind: str
    title: str
    label: str
    extensions: tuple
    magic: tuple
    read: Callable
    write: Callable
    bare_names: bool = False
    data_files: Callable = None


FORMATS = (
    Format("dicom", "dicom", "DICOM", "DICOM", (".dcm", ".dicom", ".dic", ".ima"),
           ((128, b"DICM"),), dicom.read, dicom.write, bare_names=True),
    Format("nifti", "volume", "NIfTI", "NIfTI (.nii, .nii.gz)", (".nii", ".nii.gz"),
           (), nifti.read, nifti.write),
    Format("nifti-pair", "volume", "NIfTI pair", "NIfTI pair (.hdr + .img)", nifti_pair.EXTENSIONS,
           (), nifti_pair.read, nifti_pair.write, data_files=nifti_pair.data_files),
    Format("nrrd", "volume", "NRRD", "NRRD (.nrrd, .nhdr)", (".nrrd", ".nhdr"),
           ((0, b"NRRD"),), nrrd.read, nrrd.write, data_files=nrrd.data_files),
    Format("metaimage", "volume", "MetaImage", "MetaImage (.mha, .mhd)", (".mha", ".mhd"),
           (), metaimage.read, metaimage.write, data_files=metaimage.data_files),
    # JPEG is read (benchmark HR sets such as Set14 ship it) but, being lossy, not advertised.
    Format("image", "image", "PNG/TIFF/BMP", "PNG/TIFF/BMP",
           (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg"),
           ((0, b"\x89PNG\r\n\x1a\n"), (0, b"II*\x00"), (0, b"MM\x00*"), (0, b"BM"),
            (0, b"\xff\xd8\xff")), images.read, images.write),
)

SUPPORTED = ", ".join(f.label for f in FORMATS)
IMAGE_EXTS = next(f.extensions for f in FORMATS if f.name == "image")  # the one list of them


def by_name(name) -> Format:
    """The registry row called ``name`` (KeyError for an unknown name: a programming error)."""
    for fmt in FORMATS:  # looked up on each call: the table is the only place formats live
        if fmt.name == name:
            return fmt
    raise KeyError(name)


def sniff(path) -> "str | None":
    """Guess a file's format from its name and first bytes: a row's ``name``, or None.

    Cheap (at most the first few hundred bytes); the reader confirms it. DataError if the
    file cannot be read.
    """
    p = Path(path)
    start = head(p, max((off + len(sig) for f in FORMATS for off, sig in f.magic), default=0))
    for fmt in FORMATS:
        if any(start[off:off + len(sig)] == sig for off, sig in fmt.magic):
            return fmt.name
    name = p.name.lower()
    for fmt in FORMATS:
        if name.endswith(fmt.extensions):
            return fmt.name
    suffix = p.suffix.lower()
    if suffix == "" or suffix[1:].isdigit():
        return next((f.name for f in FORMATS if f.bare_names), None)
    return None


def format_of(path) -> Format:
    """The registry row for a file; DataError naming the file if no format claims it."""
    name = sniff(path)
    if name is None:
        raise DataError(f"{path}: unsupported file format (supported: {SUPPORTED})")
    return by_name(name)
