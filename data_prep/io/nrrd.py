"""NRRD volumes (.nrrd; .nhdr with a detached data file), the format of 3D Slicer: read into a
:class:`~data_prep.io.volume.Volume`, write an upscaled copy, through SimpleITK
(:mod:`data_prep.io.itk` says what is kept and how the geometry moves)."""
import re
from pathlib import Path

from . import itk

__all__ = ["read", "write", "data_files"]

TITLE, IMAGE_IO = "NRRD", "NrrdImageIO"


def _compressed(path) -> bool:
    """Whether the header's ``encoding`` field says gzip or bzip2 (ITK writes gzip)."""
    text = itk.header_text(path).split("\n\n")[0]
    found = re.search(r"^encoding:\s*(\S+)", text, re.MULTILINE | re.IGNORECASE)
    return bool(found) and found.group(1).lower() in ("gzip", "gz", "bzip2", "bz2")


def read(path):
    return itk.read(path, TITLE, IMAGE_IO, _compressed(path))


def write(path, like, values, planes, scale) -> None:
    itk.write(path, like, values, planes, scale, TITLE, IMAGE_IO)


def data_files(path):
    """The files beside ``path`` that writing it creates besides itself: a .nhdr header's data
    file (``<stem>.raw``, or ``<stem>.raw.gz`` compressed); none for a .nrrd."""
    path = Path(path)
    if not path.name.lower().endswith(".nhdr"):
        return []
    stem = path.name[:-len(".nhdr")]
    return [path.with_name(stem + ".raw"), path.with_name(stem + ".raw.gz")]
