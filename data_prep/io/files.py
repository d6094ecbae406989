"""What every format module shares: first bytes, folder listing, names, stored values,
atomic writes."""
import re
from pathlib import Path

import numpy as np

from core.atomic import atomic_path
from core.errors import DataError
from data_prep.matlab import round_half_away

__all__ = ["head", "natural_key", "list_files", "stem", "to_stored", "write_bytes"]


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


def to_stored(values, dtype, lo=None, hi=None):
    """``values`` as ``dtype`` for a file: integers rounded half away from zero (MATLAB's
    rounding, as the training data) and clipped to [lo, hi] (default: the dtype's range);
    float dtypes are only cast."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.asarray(values).astype(dtype)
    info = np.iinfo(dtype)
    lo = info.min if lo is None else lo
    hi = info.max if hi is None else hi
    return np.clip(round_half_away(values), lo, hi).astype(dtype)


def write_bytes(path, data) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it, renamed at the end, so
    that a failure leaves no partial file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
