"""2-D pictures (PNG, TIFF, BMP, JPEG): read as OpenCV decodes them, reduce to grey, write.

Reading goes through ``cv2.imdecode`` on the file's bytes (not ``cv2.imread``) so that paths
that are not ASCII work; a multi-page TIFF gives its first page.
"""
import os
from pathlib import Path

import cv2
import numpy as np

from core.atomic import staging_dir
from core.errors import DataError
from .files import to_stored, write_bytes

__all__ = ["read", "to_grey", "check_colour", "read_grey", "write", "check_writable", "page_count",
           "read_pages", "write_pages", "check_pages_writable"]

# What each written format holds without loss of depth: OpenCV writes anything else to these
# as 8 bits without a word (a 16-bit scan saved as .bmp would lose its low bits). JPEG is read
# (benchmark sets ship it) but never written: it is lossy.
DEPTHS = {".png": ("uint8", "uint16"), ".tif": ("uint8", "uint16", "float32"),
          ".tiff": ("uint8", "uint16", "float32"), ".bmp": ("uint8",)}


def read(path):
    """The picture as stored: grey (H, W), or colour (H, W, 3|4) in OpenCV's BGR(A) order;
    uint8, uint16 or float. A single-channel array comes back 2-D. DataError if it cannot
    be read or decoded."""
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise DataError(f"{path}: cannot read as an image (not a valid PNG/TIFF/BMP/JPEG file)")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    return img


def to_grey(img, path):
    """Grey stays; grey + alpha -> grey; 8-bit BGR(A) -> MATLAB ``rgb2ycbcr`` luma Y (as the
    SRCNN release); other colour is refused (:func:`check_colour`)."""
    if img.ndim == 3 and img.shape[2] in (1, 2):
        img = img[..., 0]
    if img.ndim == 2:
        return img
    check_colour(img, path)
    if img.ndim != 3:
        raise DataError(f"{path}: unexpected image shape {img.shape}")
    from data_prep.matlab import rgb2ycbcr
    # cv2 gives BGR(A): reverse the first three channels, drop alpha.
    return rgb2ycbcr(np.ascontiguousarray(img[..., 2::-1]))


def check_colour(img, path) -> None:
    """DataError for colour other than 8-bit BGR or BGRA: MATLAB's luma, which both the training
    data and the upscaler's colour path use, is defined on 8 bits."""
    if img.ndim == 3 and (img.dtype != np.uint8 or img.shape[2] not in (3, 4)):
        raise DataError(f"{path}: {img.dtype} images with {img.shape[2]} channels are not "
                        "supported (need grey, or 8-bit colour)")


def read_grey(path):
    """The picture as a 2-D grey array (:func:`read`, then :func:`to_grey`)."""
    return to_grey(read(path), path)


def write(path, values, dtype) -> None:
    """Write ``values`` (grey H x W, or B, G, R[, A] in the last axis) as ``dtype`` in the
    format that ``path``'s suffix names, atomically; integers are rounded half away from zero
    and clipped to the dtype's range. DataError if the format cannot hold that dtype."""
    path = Path(path)
    check_writable(path, dtype)
    out = to_stored(values, dtype)
    try:
        ok, buf = cv2.imencode(path.suffix.lower(), out)
    except cv2.error:  # some encoders assert on the depth instead of returning False
        ok = False
    if not ok:
        raise DataError(f"{path}: cannot encode a {out.dtype} image in {path.suffix} format")
    write_bytes(path, buf.tobytes())


def check_writable(path, dtype) -> None:
    """DataError unless ``path``'s format holds ``dtype`` images at their full depth (float64 is
    written as float32, which only TIFF holds)."""
    suffix, name = Path(path).suffix.lower(), np.dtype(dtype).name
    name = "float32" if name == "float64" else name
    held = DEPTHS.get(suffix, ())
    if name not in held:
        fits = " or ".join(s for s, depths in DEPTHS.items() if name in depths and s != ".tiff")
        why = f"({', '.join(held)} only)" if held else "(lossy or unknown: not written)"
        raise DataError(f"{path}: a {suffix or 'suffix-less'} file cannot hold {name} pixels {why}: "
                        f"write {fits or 'another format'}")


TIFF = (".tif", ".tiff")


def page_count(path) -> int:
    """How many pages a TIFF holds (1 for other pictures, or when OpenCV cannot count them)."""
    if Path(path).suffix.lower() not in TIFF:
        return 1
    return max(1, int(cv2.imcount(str(path))))


def read_pages(path):
    """Every page of a multi-page TIFF (a stack some microscopes and research tools write), each
    as :func:`read` gives a picture; any other picture as one page."""
    if page_count(path) == 1:
        return [read(path)]
    ok, pages = cv2.imreadmulti(str(path), flags=cv2.IMREAD_UNCHANGED)
    if not ok or not pages:
        raise DataError(f"{path}: cannot read the pages of this TIFF")
    return [p[..., 0] if p.ndim == 3 and p.shape[2] == 1 else p for p in pages]


def check_pages_writable(path, dtype) -> None:
    """DataError unless ``path`` names a TIFF that holds ``dtype`` (:func:`check_writable`)."""
    check_writable(path, dtype)
    if Path(path).suffix.lower() not in TIFF:
        raise DataError(f"{path}: several pages need a TIFF (.tif, .tiff)")


def write_pages(path, pages, dtype) -> None:
    """Write ``pages`` as one multi-page TIFF (stored as :func:`write` stores one picture),
    built in a temporary folder beside ``path`` and renamed into place."""
    path = Path(path)
    check_pages_writable(path, dtype)
    with staging_dir(path) as tmp:
        if not cv2.imwritemulti(str(tmp / path.name), [to_stored(p, dtype) for p in pages]):
            raise DataError(f"{path}: cannot write a {np.dtype(dtype)} multi-page TIFF")
        os.replace(tmp / path.name, path)
