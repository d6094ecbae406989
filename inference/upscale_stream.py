"""x ``scale`` estimates of 2-D slices in bounded memory, for ``inference.upscale``.

The bicubic image is made band by band (:func:`bicubic_rows`: MATLAB's imresize is two 1-D
passes; the first is kept whole, at 1/scale of the output's size, the second made for a band of
rows when the net needs it) and a net with an ``estimate`` method (``inference.net.SRNet``) runs over
tiles, writing into one float64 array per file (:func:`output_array`, refused in one line before
any work where it does not fit): the estimate is the same, bit for bit, as the net on the whole
bicubic image.
"""
import math

import numpy as np
from tqdm import tqdm

from core.config import DEFAULT
from core.errors import DataError
from data_prep.io.files import chunks
from data_prep.matlab import imresize

DEFAULT_SCALE = DEFAULT.scale  # a caffemodel given without its run says nothing of its own


def upscale_slice(net, x01, scale=DEFAULT_SCALE, out=None):
    """The net's x ``scale`` estimate (float64, [0, 1] scale) of one 2-D slice in [0, 1] scale,
    written into ``out`` if given. A net with an ``estimate`` method (``SRNet``) gets the
    bicubic image band by band (:func:`bicubic_rows`), any other callable the whole of it."""
    x = np.asarray(x01, dtype=np.float64)
    estimate = getattr(net, "estimate", None)
    if estimate is not None:
        rows, shape = bicubic_rows(x, scale)
        return estimate(rows, shape, out=out)
    y = np.asarray(net(imresize(x, scale)), dtype=np.float64)
    if out is None:
        return y
    out[...] = y
    return out


def bicubic_rows(x, scale=DEFAULT_SCALE):
    """(``rows``, shape) of ``imresize(x, scale)`` without making it whole: ``rows(a, b)`` gives
    its rows a..b-1, equal bit for bit to those of the whole image.

    MATLAB's imresize is separable and resizes along rows first (equal scales: rows first), so
    it is ``imresize`` with output_shape along one axis at a time (the other's scale 1: an exact
    copy). The first pass is done once, column by column (H x scale by W: 1/scale of the
    output), the second for the rows asked."""
    height, width = x.shape
    out_rows, out_cols = math.ceil(scale * height), math.ceil(scale * width)
    first = np.empty((out_rows, width))
    step = max(1, (1 << 21) // out_rows)
    for c in range(0, width, step):
        part = x[:, c:c + step]
        first[:, c:c + step] = imresize(part, output_shape=(out_rows, part.shape[1]))

    def rows(a, b):
        return imresize(first[a:b], output_shape=(b - a, out_cols))
    return rows, (out_rows, out_cols)


def upscale_stack(net, slices, window, invert=None, desc="upscale", scale=DEFAULT_SCALE,
                  out=None, progress=None):
    """x ``scale`` estimates of 2-D slices, in their own intensity scale (float64, neither
    clipped nor rounded), all mapped through one ``window`` (lo, hi). ``invert[i]`` flips slice
    i inside the window for the net (MONOCHROME1), and flips the estimate back. Written into
    ``out[i]`` (float64 arrays of the upscaled size) if given, else into new arrays; returns
    them. ``progress``: a tqdm bar to advance instead of a bar of its own."""
    lo, hi = window
    invert = [False] * len(slices) if invert is None else invert
    bar = progress if progress is not None else tqdm(total=len(slices), desc=desc, unit="slice",
                                                     disable=None)
    results = []
    try:
        for i, (s, flip) in enumerate(zip(slices, invert)):
            s = np.asarray(s, dtype=np.float64)
            finite = np.isfinite(s)
            masked = not finite.all()
            x = (np.where(finite, s, lo) if masked else s) - lo
            x /= hi - lo
            y = upscale_slice(net, 1.0 - x if flip else x, scale,
                              out=None if out is None else out[i])
            for piece in chunks(y.shape):  # lo + (1 - y or y) * (hi - lo), in place
                part = y[piece]
                if flip:
                    np.subtract(1.0, part, out=part)
                part *= hi - lo
                part += lo
            if masked:
                restore_nonfinite(y, s, scale)
            results.append(y)
            bar.update()
    finally:
        if progress is None:
            bar.close()
    return results if out is None else out


def source_index(n_out, n_in, scale):
    """For each of ``n_out`` output pixels along an axis refined ``scale`` times, the input pixel
    its centre lies in (imresize's geometry), clipped to the ``n_in`` input pixels."""
    return np.minimum(((np.arange(n_out) + 0.5) / scale).astype(np.intp), n_in - 1)


def restore_nonfinite(y, s, scale=DEFAULT_SCALE):
    """Put ``s``'s NaN and infinite pixels back into its estimate ``y`` (in place), each on the
    output pixels whose centre falls inside it (imresize's geometry: output pixel n is centred on
    input index (n + 0.5) / scale - 0.5, so it lies in input pixel floor((n + 0.5) / scale)).

    Why: a NaN-masked volume (SPM, FSL and others write NaN outside the brain) keeps its mask;
    the net saw those pixels as the window's low value, so their neighbours are estimated as
    next to background."""
    rows, cols = source_index(y.shape[0], s.shape[0], scale), source_index(y.shape[1], s.shape[1], scale)
    bad_rows = np.flatnonzero(~np.isfinite(s).all(axis=1)[rows])  # output rows that need it
    for r in bad_rows:
        source = s[rows[r], cols]
        bad = ~np.isfinite(source)
        y[r, bad] = source[bad]
    return y


def upscaled_shape(shape, scale=DEFAULT_SCALE):
    """The in-plane size imresize gives a (rows, cols) slice at ``scale``."""
    return tuple(math.ceil(scale * n) for n in shape)


def output_array(shape, source):
    """A float64 array for the estimates; DataError (one line, before any work) when it does
    not fit in the memory this machine has available."""
    need = 8 * math.prod(shape)
    available = _available_memory()
    if available is not None and need > available:
        raise DataError(f"{source}: the {'x'.join(map(str, shape))} output needs "
                        f"{_size(need)} of memory (float64); {_size(available)} is available")
    try:
        return np.empty(shape)
    except MemoryError:
        raise DataError(f"{source}: not enough memory for a {'x'.join(map(str, shape))} "
                        f"output ({_size(need)})") from None


def _size(n):
    """Bytes for a message: 86 kB, 12 MB, 1.0 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if unit == "GB" else f"{n / scale:.0f} {unit}"
    return f"{n} bytes"


def _available_memory():
    """MemAvailable from /proc/meminfo in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
