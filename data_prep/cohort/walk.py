"""Find every file under the inputs (any depth) and read what planning needs: a DICOM file's
header only (pydicom ``stop_before_pixels``), never its pixels; a volume's header (its slices
along each axis: volume_header.py).

Each file becomes one small picklable record (:class:`FileInfo`): the header fields planning
uses, or the reason the file is left out. Headers are read in ``jobs`` processes; the records come
back in the walk's order, so the plan is the same for any ``jobs``."""
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from core.errors import DataError
from data_prep.io import by_name, dicom, sniff
from data_prep.io.files import natural_key

from .volume_header import slices_along_axes

# Header fields kept per DICOM file: what grouping, matching, sorting and the checks read.
FIELDS = ("SeriesInstanceUID", "SeriesDescription", "ProtocolName", "PatientID", "SeriesNumber",
          "StudyInstanceUID", "StudyDate", "Modality", "ImageOrientationPatient",
          "ImagePositionPatient", "InstanceNumber", "Rows", "Columns", "NumberOfFrames")
UNCOMPRESSED = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")


@dataclass
class FileInfo:
    """One file of the tree. kind: "dicom", "volume" or "skip" (then ``reason`` says why);
    header: FIELDS found in a DICOM file (values as plain Python: str, float lists, int), or a
    volume's ``{"slices_along": [slices along RAS+ axis 0, 1, 2]}``; format: the registry's name
    of the file's format ("" when it has none)."""
    path: Path
    kind: str
    reason: str = ""
    header: dict = field(default_factory=dict)
    format: str = ""

    def get(self, key, default=None):
        """As a pydicom dataset's ``get``: dicom_series' sorting and checks read records so."""
        return self.header.get(key, default)


def tree_files(inputs):
    """Every regular, non-hidden file under ``inputs`` (files or folders, any depth), DICOMDIR
    left out (an index, not an image), each once, in natural path order within each input.
    DataError for an input that does not exist."""
    seen, files = set(), []
    for root in inputs:
        root = Path(root)
        if root.is_file():
            found = [root]
        elif root.is_dir():
            found = sorted(_walk(root), key=lambda p: [natural_key(part) for part in p.parts])
        else:
            raise DataError(f"{root}: no such file or folder (--input)")
        for path in found:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files


def _walk(root):
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            path = Path(folder) / name
            if not name.startswith(".") and name.upper() != "DICOMDIR" and path.is_file():
                yield path


def read_infos(files, jobs=1):
    """[FileInfo] for ``files``, in their order; header reads in ``jobs`` processes."""
    if jobs <= 1 or len(files) < 2:
        return [file_info(f) for f in files]
    with ProcessPoolExecutor(jobs) as pool:
        return list(pool.map(file_info, files, chunksize=max(1, len(files) // (4 * jobs))))


def file_info(path):
    """The record of one file: what it is, or why it is left out."""
    try:
        name = sniff(path)
    except DataError as exc:
        return FileInfo(path, "skip", _reason(exc, path))
    kind = by_name(name).kind if name else None
    if kind == "volume":
        try:
            return FileInfo(path, "volume", header={"slices_along": slices_along_axes(path, name)},
                            format=name)
        except DataError as exc:
            return FileInfo(path, "skip", _reason(exc, path), format=name)
    if kind == "image":
        return FileInfo(path, "skip", "a 2-D picture, not a slice of a series (give its folder "
                                      "to --input without --series)")
    if kind != "dicom":
        return FileInfo(path, "skip", "not a medical image file")
    try:
        return FileInfo(path, "dicom", header=dicom_header(path))
    except DataError as exc:
        return FileInfo(path, "skip", _reason(exc, path))


def without_data_files(infos):
    """The records without the files a volume header's voxels lie in (a NIfTI pair's ``.img``,
    the ``.raw`` of a ``.mhd`` or ``.nhdr``): a volume is one series, named by its header file.
    A ``.hdr`` claims its ``.img`` and not the reverse, whatever order the walk found them in."""
    claimed = set()
    headers_first = sorted((i for i in infos if i.format and by_name(i.format).data_files),
                           key=lambda i: Path(i.path).suffix.lower() == ".img")
    for info in headers_first:
        if str(info.path) not in claimed:
            claimed.update(str(p) for p in by_name(info.format).data_files(info.path))
    return [i for i in infos if str(i.path) not in claimed]


def _reason(exc, path):
    """A DataError's message without the file name it starts with (the record names the file)."""
    text = str(exc)
    return text[len(str(path)) + 2:] if text.startswith(f"{path}: ") else text


def dicom_header(path):
    """FIELDS of a DICOM image file, read without its pixel data; DataError if it is no DICOM
    image or its (uncompressed) pixel data is cut short."""
    with open(path, "rb") as fp:
        ds = dicom.dcmread(fp, path, stop_before_pixels=True)
        pixel_start = fp.tell()
    size = os.path.getsize(path)
    if "SOPClassUID" not in ds and "Rows" not in ds:  # a forced read of something else
        raise DataError(f"{path}: not a DICOM file")
    if "Rows" not in ds or "Columns" not in ds or pixel_start >= size:
        raise DataError(f"{path}: not a DICOM image (no pixel data)")
    if "SeriesInstanceUID" not in ds:
        raise DataError(f"{path}: no SeriesInstanceUID: its series is unknown")
    header = {k: _plain(ds.get(k)) for k in FIELDS if ds.get(k) not in (None, "")}
    missing = _missing_pixel_bytes(ds, size - pixel_start)
    if missing:
        raise DataError(f"{path}: pixel data cut short ({missing} bytes missing): a corrupt or "
                        "partly copied file")
    return header


def _missing_pixel_bytes(ds, available):
    """How many bytes of uncompressed pixel data the file lacks (0 when complete or compressed);
    ``available`` counts from the PixelData element's tag."""
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if syntax and syntax not in UNCOMPRESSED:
        return 0
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        expected = int(ds.Rows) * int(ds.Columns) * frames * samples * int(ds.BitsAllocated) // 8
    except (TypeError, ValueError, AttributeError):
        return 0
    element_header = 8 if syntax == "1.2.840.10008.1.2" else 12
    return max(0, expected - (available - element_header))


def _plain(value):
    """A header value as plain Python (picklable, comparable): multi-values as lists."""
    if isinstance(value, (pydicom.multival.MultiValue, list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (int, float)):
        return value if isinstance(value, int) else float(value)
    return str(value).strip()
