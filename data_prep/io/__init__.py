"""One image I/O layer for data preparation, scoring and upscaling: DICOM, NIfTI, NRRD, MetaImage,
2-D pictures.

    formats.py       the registry: one table of formats (extensions, magic bytes, read, write),
                     format detection (``sniff``) and the supported-formats text
    dicom.py         DICOM files: forced reads, frames, modality LUT, MONOCHROME1, writing
    dicom_series.py  DICOM series: grouping by SeriesInstanceUID, slice order, spacing
    nifti.py         NIfTI files: read into a Volume, write an upscaled copy
    itk_formats.py   NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd): one entry each, through itk.py
    itk.py           what NRRD and MetaImage share: SimpleITK, LPS geometry, atomic writes
    volume.py        what affine volumes share: Volume, RAS+ reorientation, voxel axes
    images.py        PNG/TIFF/BMP/JPEG: decode, grey (MATLAB luma), encode
    files.py         first bytes, folder listing (natural order), names, stored values,
                     atomic writes

Errors are :class:`core.errors.DataError` with one line naming the file.
"""
# The format modules, for callers that need one directly.
from . import dicom, images, nifti
from .itk_formats import metaimage, nrrd
from .files import list_files, natural_key, stem
from .formats import FORMATS, IMAGE_EXTS, SUPPORTED, Format, by_name, format_of, sniff
from .volume import Volume

__all__ = ["FORMATS", "IMAGE_EXTS", "SUPPORTED", "Format", "Volume", "by_name", "dicom",
           "format_of", "images", "list_files", "metaimage", "natural_key", "nifti", "nrrd",
           "sniff", "stem"]
