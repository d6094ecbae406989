"""The volume formats SimpleITK reads and writes for us, each one entry of ``ItkFormat``: NRRD
(.nrrd; .nhdr with a detached data file), the format of 3D Slicer, and MetaImage (.mha; .mhd with
a detached data file), ITK's own. A volume is read into a :class:`~data_prep.io.volume.Volume` and
an upscaled copy is written (:mod:`data_prep.io.itk` says what is kept and how the geometry
moves); the formats differ only in how the header says the data is compressed and in the names
of a detached header's data file."""
import re
from dataclasses import dataclass
from pathlib import Path

from . import itk

__all__ = ["ItkFormat", "nrrd", "metaimage"]


@dataclass(frozen=True)
class ItkFormat:
    """One SimpleITK format: ``title`` for messages, ``image_io`` SimpleITK's name for it;
    ``detached`` the suffix of a header whose data is a file of its own, named ``<stem>`` plus
    one of ``data_suffixes``; the header ends where ``header_end`` starts, and ``compression``
    (a regular expression on that header) finds the field whose value is one of ``compressed``."""
    title: str
    image_io: str
    detached: str
    data_suffixes: tuple
    header_end: str
    compression: str
    compressed: tuple

    def _compressed(self, path) -> bool:
        text = itk.header_text(path).split(self.header_end)[0]
        found = re.search(self.compression, text, re.MULTILINE | re.IGNORECASE)
        return bool(found) and found.group(1).lower() in self.compressed

    def read(self, path):
        return itk.read(path, self.title, self.image_io, self._compressed(path))

    def write(self, path, like, values, planes, scale) -> None:
        itk.write(path, like, values, planes, scale, self.title, self.image_io)

    def data_files(self, path):
        """The files beside ``path`` that writing it creates besides itself: a detached header's
        data file (plain or compressed); none for a single-file volume."""
        path = Path(path)
        if not path.name.lower().endswith(self.detached):
            return []
        stem = path.name[:-len(self.detached)]
        return [path.with_name(stem + suffix) for suffix in self.data_suffixes]


# ITK writes gzip; the "encoding" field ends at the first blank line
nrrd = ItkFormat("NRRD", "NrrdImageIO", ".nhdr", (".raw", ".raw.gz"), "\n\n",
                 r"^encoding:\s*(\S+)", ("gzip", "gz", "bzip2", "bz2"))
metaimage = ItkFormat("MetaImage", "MetaImageIO", ".mhd", (".raw", ".zraw"), "ElementDataFile",
                      r"^\s*CompressedData\s*=\s*(\S+)", ("true", "1"))
