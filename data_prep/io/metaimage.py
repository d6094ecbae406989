"""MetaImage volumes (.mha; .mhd with a detached data file), ITK's own format: read into a
:class:`~data_prep.io.volume.Volume`, write an upscaled copy, through SimpleITK
(:mod:`data_prep.io.itk` says what is kept and how the geometry moves)."""
import re
from pathlib import Path

from . import itk

__all__ = ["read", "write", "data_files"]

TITLE, IMAGE_IO = "MetaImage", "MetaImageIO"


def _compressed(path) -> bool:
    """Whether the header says ``CompressedData = True``."""
    text = itk.header_text(path).split("ElementDataFile")[0]
    found = re.search(r"^\s*CompressedData\s*=\s*(\S+)", text, re.MULTILINE | re.IGNORECASE)
    return bool(found) and found.group(1).lower() in ("true", "1")


def read(path):
    return itk.read(path, TITLE, IMAGE_IO, _compressed(path))


def write(path, like, values, planes, scale) -> None:
    itk.write(path, like, values, planes, scale, TITLE, IMAGE_IO)


def data_files(path):
    """The files beside ``path`` that writing it creates besides itself: a .mhd header's data
    file (``<stem>.raw``, or ``<stem>.zraw`` compressed); none for a .mha."""
    path = Path(path)
    if not path.name.lower().endswith(".mhd"):
        return []
    stem = path.name[:-len(".mhd")]
    return [path.with_name(stem + ".raw"), path.with_name(stem + ".zraw")]
