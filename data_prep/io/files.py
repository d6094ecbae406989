"""What every format module shares: first bytes, folder listing, names, stored values,
atomic writes."""
import re
from pathlib import Path

import numpy as np

from core.atomic import atomic_path
from core.errors import DataError
from data_prep.matlab import round_half_away

__all__ = ["head", "natural_key", "list_files", "stem", "to_stored", "chunks", "write_bytes",
           "write_with"]


def head(path, n) -> bytes:
    """First ``n`` bytes of a file (fewer if it is shorter); DataError if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})")


def natural_key(path):
    """Sort key comparing digit runs as numbers ("s2" < "s10"), case-insensitively; the exact
    name breaks ties ("s01" / "s1", "A" / "a") so that the order never depends on the file
    system's listing order."""
    name = Path(path).name
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)], name


def list_files(folder):
    """Regular, non-hidden files of ``folder`` in natural name order (not recursive).

    ``DICOMDIR`` (a DICOM media index, not an image) is left out. May be empty: each caller
    words its own error.
    """
    files = [f for f in Path(folder).iterdir()
             if f.is_file() and not f.name.startswith(".") and f.name.upper() != "DICOMDIR"]
    return sorted(files, key=natural_key)


def stem(path, extensions) -> str:
    """File name without the first of ``extensions`` it ends with (case-insensitive).

    Unlike ``Path.stem`` only known extensions go, so UID-like DICOM names ("1.2.3.4") keep
    their dots and "vol.nii.gz" loses both suffixes.
    """
    name = Path(path).name
    for ext in extensions:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def to_stored(values, dtype, lo=None, hi=None, scaling=None):
    """``values`` as ``dtype`` for a file: integers rounded half away from zero (MATLAB's
    rounding, as the training data) and clipped to [lo, hi] (default: the dtype's range);
    float dtypes are only cast. ``scaling`` (slope, inter) first maps values to stored values,
    ``(values - inter) / slope``, as DICOM's RescaleSlope/Intercept and NIfTI's scl_slope/inter.

    Worked in pieces of about :data:`CHUNK` elements, so that a large image (a x3 mammogram is
    about 130 million pixels) needs no full-size temporaries besides the result."""
    dtype = np.dtype(dtype)
    values = np.asarray(values)
    out = np.empty(values.shape, dtype)
    if dtype.kind != "f":
        info = np.iinfo(dtype)
        lo = info.min if lo is None else lo
        hi = info.max if hi is None else hi
    for piece in chunks(values.shape):
        part = values[piece]
        if scaling is not None:
            slope, inter = scaling
            part = (part - inter) / slope
        out[piece] = part if dtype.kind == "f" else np.clip(round_half_away(part), lo, hi)
    return out


CHUNK = 1 << 22  # elements per piece (32 MB of float64)


def chunks(shape, limit=CHUNK):
    """Index tuples that cover an array of ``shape`` in pieces of at most ``limit`` elements
    (at least one element of the last axis each): whole trailing axes, a range of the next."""
    shape = tuple(int(n) for n in shape)
    inner, k = 1, len(shape)
    while k > 0 and inner * shape[k - 1] <= limit:
        inner *= shape[k - 1]
        k -= 1
    if k == 0:
        yield ()
        return
    step = max(1, limit // inner)
    for lead in np.ndindex(*shape[:k - 1]):
        for start in range(0, shape[k - 1], step):
            yield lead + (slice(start, start + step),)


def write_bytes(path, data) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it, renamed at the end, so
    that a failure leaves no partial file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_with(path, writer) -> None:
    """``writer(temporary path)`` writes the file, which is then renamed onto ``path`` (removed
    if ``writer`` raises): :func:`write_bytes` for writers that stream to a file themselves."""
    with atomic_path(path) as tmp:
        writer(tmp)
