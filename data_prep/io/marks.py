"""The mark each file format carries when this project wrote the file, and how it is read back:
FORCE replaces an existing output only when it carries its mark (``core.outputs``).

Every mark is a text that starts with :data:`core.outputs.PRODUCER`, "medsr-caffe", in a field
the format keeps for such notes, so that readers of the file ignore it:

    DICOM      the last item of the Contributing Equipment Sequence names "medsr-caffe" as its
               Manufacturer (a standard attribute, added by ``data_prep.io.dicom_derived`` to
               every file written; outputs of earlier versions carry a private element
               (0009,xx01) under the creator "medsr-caffe" instead, still read); a series
               folder is this project's when every entry in it is such a file, all of one
               series (each command writes a new SeriesInstanceUID), or when it is empty
    NIfTI      a header extension of code 6 (comment); a pair keeps it in its .hdr
    NRRD       the key/value field ``medsr_caffe:=...``
    MetaImage  the header field ``medsr_caffe = ...``
    PNG        a tEXt chunk of keyword "Software"
    TIFF       the Software tag (305) of the first page
    BMP        none: the format has no field for it, so FORCE never replaces a BMP

A file this project did not write, or wrote before its outputs were marked, carries none.
"""
import os
import re
import struct
import warnings
import zlib
from pathlib import Path

from core.atomic import staging_dir
from core.outputs import PRODUCER

__all__ = ["mark_text", "drop_old_dicom_mark", "dicom_is_ours", "mark_nifti", "ITK_KEY", "mark_picture",
           "write_marked_picture", "MARKS", "file_refusal", "series_refusal"]

# Where outputs of earlier versions carried the mark: a private element, which validators
# report as an unrecognised tag. Read, never written.
DICOM_GROUP = 0x0009
DICOM_ELEMENT = 0x01
NIFTI_COMMENT = 6  # NIFTI_ECODE_COMMENT
ITK_KEY = "medsr_caffe"
SOFTWARE = 305  # TIFF tag

# What each format's mark is, for the line that refuses a file without it
MARKS = {"dicom": "a Contributing Equipment item naming medsr-caffe",
         "nifti": "a comment header extension", "nifti-pair": "a comment header extension",
         "nrrd": f"the field {ITK_KEY}", "metaimage": f"the field {ITK_KEY}",
         "png": "a Software tEXt chunk", "tiff": "a Software tag", "bmp": None}


def mark_text(what):
    """The text of a mark: the producer, then what wrote the file ("upscale x3")."""
    return f"{PRODUCER} {what}"


def _is_mark(text):
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    return str(text).strip("\0 ").startswith(PRODUCER)


# ---------------------------------------------------------------------------------- DICOM

def dicom_is_ours(ds):
    """Whether dataset ``ds`` carries the mark: its last Contributing Equipment item names this
    project (a later tool that derives from our output adds its own item after it), or the
    private element of earlier versions."""
    equipment = ds.get("ContributingEquipmentSequence") or []
    if equipment and str(equipment[-1].get("Manufacturer", "")) == PRODUCER:
        return True
    try:
        return _is_mark(ds.private_block(DICOM_GROUP, PRODUCER)[DICOM_ELEMENT].value)
    except (KeyError, ValueError):
        return False


def drop_old_dicom_mark(ds):
    """Remove the private block earlier versions wrote (an input that was one of our outputs):
    an output says it is ours by its Contributing Equipment item only."""
    try:
        block = ds.private_block(DICOM_GROUP, PRODUCER)
    except KeyError:
        return
    for tag in [t for t in ds.keys() if t.group == DICOM_GROUP and
                (t.element == block.block_start >> 8 or
                 block.block_start <= t.element < block.block_start + 0x100)]:
        del ds[tag]


def _dicom_series(path):
    """The file's SeriesInstanceUID when it is a DICOM file that carries the mark, else None."""
    import pydicom
    try:
        with open(path, "rb") as f:
            if f.read(132)[128:] != b"DICM":  # the writer always writes the preamble: others are not ours
                return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
        marked = dicom_is_ours(ds)
    except Exception:  # not DICOM or unreadable
        return None
    return str(ds.get("SeriesInstanceUID", "")) if marked else None


def _dicom_marked(path):
    return _dicom_series(path) is not None


def series_refusal(folder):
    """None when ``folder`` is a DICOM series folder this project wrote (every entry a file that
    carries the mark, all of one series) or an empty one; else why not, a clause ("it holds
    ...": core.outputs.check_replace's ``own``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return "it is a file, not a series folder this project wrote"
    series = set()
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        uid = _dicom_series(entry.path) if entry.is_file(follow_symlinks=False) else None
        if uid is None:
            return f"it holds {entry.name}, which carries no mark of this project ({MARKS['dicom']})"
        series.add(uid)
    if len(series) > 1:
        return f"it holds {len(series)} series, where a command of this project writes one"
    return None


# ---------------------------------------------------------------------------------- NIfTI

def mark_nifti(header, what):
    """Put the mark into a NIfTI ``header`` as a comment extension (an input's mark replaced)."""
    import nibabel as nib
    exts = header.extensions
    exts[:] = [e for e in exts if not (e.get_code() == NIFTI_COMMENT and _is_mark(e.get_content()))]
    exts.append(nib.nifti1.Nifti1Extension(NIFTI_COMMENT, mark_text(what).encode()))


def _nifti_marked(path):
    import nibabel as nib
    header = nib.load(str(path)).header
    return any(e.get_code() == NIFTI_COMMENT and _is_mark(e.get_content())
               for e in getattr(header, "extensions", []))


# ---------------------------------------------------------------------- NRRD, MetaImage

def _itk_marked(path, header_end):
    from .itk import header_text
    text = header_text(path).split(header_end)[0]
    found = re.search(rf"^{ITK_KEY}\s*(?::=|=)(.*)$", text, re.MULTILINE)
    return bool(found) and _is_mark(found[1].strip())


# ------------------------------------------------------------------------------- pictures

def mark_picture(path, what):
    """Put the mark into the picture file at ``path`` (a PNG or TIFF that OpenCV wrote, not yet
    in its place: the file is changed in place). False for a format with no field for it."""
    kind = _picture_kind(path)
    if kind == "png":
        _mark_png(path, mark_text(what))
    elif kind == "tiff":
        return _mark_tiff(path, mark_text(what))
    return kind in ("png", "tiff")


def write_marked_picture(path, write, what):
    """``write(name)`` writes a picture (``data_prep.io.images.write``, which picks the encoding
    from the name's suffix) in a temporary folder beside ``path``; it is marked there and then
    renamed onto ``path``: a reader never sees it unmarked or half-written."""
    path = Path(path)
    with staging_dir(path) as tmp:
        write(tmp / path.name)
        mark_picture(tmp / path.name, what)
        os.replace(tmp / path.name, path)


_PICTURES = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".bmp": "bmp"}  # what OpenCV writes


def _picture_kind(path):
    with open(path, "rb") as f:
        start = f.read(8)
    if start == b"\x89PNG\r\n\x1a\n":
        return "png"
    if start[:4] in (b"II*\0", b"MM\0*"):
        return "tiff"
    return "bmp" if start[:2] == b"BM" else None


def _png_chunks(f):
    """(type, offset of its data, length) of each chunk of an open PNG file."""
    f.seek(8)
    while True:
        head = f.read(8)
        if len(head) < 8:
            return
        length, kind = struct.unpack(">I4s", head)
        yield kind, f.tell(), length
        f.seek(length + 4, 1)  # the data and the CRC


def _mark_png(path, text):
    """A tEXt chunk "Software" just before IEND (a PNG may hold text chunks anywhere there)."""
    data = b"Software\0" + text.encode("latin-1")
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    with open(path, "r+b") as f:
        end = next(offset - 8 for kind, offset, _ in _png_chunks(f) if kind == b"IEND")
        f.seek(end)
        tail = f.read()
        f.seek(end)
        f.write(chunk + tail)


def _png_marked(path):
    with open(path, "rb") as f:
        for kind, offset, length in _png_chunks(f):
            if kind == b"tEXt" and length < 1 << 16:
                here = f.tell()
                f.seek(offset)
                keyword, _, text = f.read(length).partition(b"\0")
                f.seek(here)
                if keyword == b"Software" and _is_mark(text):
                    return True
    return False


def _tiff_ifd(f):
    """(byte order, offset of the first IFD, its entries as (tag, type, count, value field))
    of an open classic TIFF; None for a BigTIFF."""
    f.seek(0)
    order = "<" if f.read(2) == b"II" else ">"
    magic, first = struct.unpack(order + "HI", f.read(6))
    if magic != 42:
        return None
    f.seek(first)
    (count,) = struct.unpack(order + "H", f.read(2))
    entries = [struct.unpack(order + "HHI4s", f.read(12)) for _ in range(count)]
    return order, first, entries


def _mark_tiff(path, text):
    """A copy of the first IFD with a Software tag, appended; the header then points at it (the
    old one is left unused: the pixels are not moved). False for a BigTIFF."""
    value = text.encode("ascii", "replace") + b"\0"
    with open(path, "r+b") as f:
        found = _tiff_ifd(f)
        if found is None:
            return False
        order, first, entries = found
        f.seek(first + 2 + 12 * len(entries))
        next_ifd = f.read(4)
        end = f.seek(0, 2)
        f.write(b"\0" * (end % 2) + value + b"\0" * (len(value) % 2))  # word boundaries
        at = end + end % 2
        entries = [e for e in entries if e[0] != SOFTWARE]
        entries.append((SOFTWARE, 2, len(value), struct.pack(order + "I", at)))
        entries.sort(key=lambda e: e[0])
        ifd = f.tell()
        f.write(struct.pack(order + "H", len(entries)))
        f.write(b"".join(struct.pack(order + "HHI4s", *e) for e in entries) + next_ifd)
        f.seek(4)
        f.write(struct.pack(order + "I", ifd))
    return True


def _tiff_marked(path):
    with open(path, "rb") as f:
        found = _tiff_ifd(f)
        if found is None:
            return False
        order, _, entries = found
        for tag, kind, count, field in entries:
            if tag == SOFTWARE and kind == 2:
                if count > 4:
                    f.seek(struct.unpack(order + "I", field)[0])
                    field = f.read(min(count, 1024))
                return _is_mark(field[:count])
    return False


def _picture_marked(path):
    kind = _picture_kind(path)
    return {"png": _png_marked, "tiff": _tiff_marked}.get(kind, lambda _: False)(path)


# ---------------------------------------------------------------------------- the check

_MARKED = {"dicom": _dicom_marked, "nifti": _nifti_marked, "nifti-pair": _nifti_marked,
           "nrrd": lambda p: _itk_marked(p, "\n\n"),
           "metaimage": lambda p: _itk_marked(p, "ElementDataFile"),
           "image": _picture_marked}


def file_refusal(fmt_name, path):
    """None when the file at ``path``, of the registry's format ``fmt_name``, carries this
    project's mark; else why not, a clause ("it carries no mark ...": core.outputs.check_replace's
    ``own``)."""
    try:
        marked = _MARKED[fmt_name](path)
    except Exception:  # unreadable, or not of the format at all: not ours
        marked = False
    if marked:
        return None
    what = MARKS.get(fmt_name)
    if fmt_name == "image":
        kind = _PICTURES.get(Path(path).suffix.lower())
        what = MARKS.get(kind)
        if kind == "bmp":
            return "it is a BMP file, which has no field for this project's mark"
    return f"it carries no mark of this project{f' ({what})' if what else ''}"
