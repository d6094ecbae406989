"""How many slices a volume file gives along each RAS+ axis, from its header alone (planning
reads no voxels): NIfTI through nibabel (a lazy load reads the header only), NRRD and MetaImage
through SimpleITK's ``ReadImageInformation``.

The count along RAS+ axis ``a`` is the length of the voxel axis closest to ``a``, after the
readers' own rule for 2-D and 4-D shapes (``data_prep.io.volume.as_3d``): the same voxel axis
``data_prep.readers.read_volume`` slices along for ``--axis a``, so planning and the build agree.
"""
import re
from pathlib import Path

import nibabel as nib
import numpy as np

from core.errors import DataError
from data_prep.io import by_name
from data_prep.io.itk import LPS_TO_RAS, Header, lps_affine
from data_prep.io.itk_formats import metaimage, nrrd
from data_prep.io.nifti import NIFTI_CLASSES
from data_prep.io.volume import as_3d, voxel_axis

ITK = {"nrrd": nrrd, "metaimage": metaimage}


def slices_along_axes(path, format_name):
    """[slices along RAS+ axis 0, 1, 2] of the volume file ``path`` of the registry format
    ``format_name``; DataError, naming the file, when its header cannot tell them."""
    if format_name in ITK:
        shape, affine = _itk_shape(path, ITK[format_name])
    else:
        shape, affine = _nifti_shape(path, format_name)
    # a read-only view of one value: as_3d's rule on the shape, without an array of that size
    shape = as_3d(np.broadcast_to(np.zeros((), bool), shape), path).shape
    return [int(shape[voxel_axis(affine, axis, path)]) for axis in range(3)]


def _nifti_shape(path, format_name):
    if format_name == "nifti-pair":
        missing = [p for p in by_name(format_name).data_files(path) if not Path(p).exists()]
        if missing:  # nibabel reads a pair's header without its other half
            raise DataError(f"{path}: its pair's other file {Path(missing[0]).name} is missing")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel/gzip raise many types on bad files
        raise DataError(f"{path}: cannot read NIfTI ({exc})")
    if not isinstance(img, NIFTI_CLASSES):
        raise DataError(f"{path}: not a NIfTI image (an Analyze 7.5 header, whose orientation is "
                        "ambiguous, is refused)")
    return img.shape, img.affine


def _itk_shape(path, fmt):
    try:
        import SimpleITK as sitk
    except ImportError:
        raise DataError(f"{path}: a {fmt.title} file needs the SimpleITK package; run "
                        "'make setup'") from None
    reader = sitk.ImageFileReader()
    reader.SetImageIO(fmt.image_io)
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(f"{path}: cannot read the {fmt.title} header ({_itk_reason(exc)})") \
            from None
    dim = reader.GetDimension()
    if dim not in (2, 3) or reader.GetNumberOfComponents() != 1:
        raise DataError(f"{path}: a {fmt.title} image of dimension {dim} with "
                        f"{reader.GetNumberOfComponents()} components per voxel; only scalar "
                        "2-D and 3-D images are read")
    header = Header(dim, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection(), {}, False)
    return tuple(reader.GetSize()), LPS_TO_RAS @ lps_affine(header)


def _itk_reason(exc):
    """ITK's message after its source location ('...cxx:91:\\nsitk::ERROR: ...'), one line."""
    text = " ".join(str(exc).split())
    found = re.search(r"ERROR:\s*(.*)", text)
    return (found.group(1) if found else text)[:200]
