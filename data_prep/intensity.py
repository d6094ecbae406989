"""Map medical image intensities to 8-bit grey (uint8, 0..255; PSNR peak 255).

Every rule is applied per VOLUME: its parameters (e.g. the percentile window)
are computed once over all slices of a series/volume and then applied to each
slice, so the slices of one volume share one mapping and stay comparable.

Rules (``x`` = input value, ``y`` = value before rounding):

``"mr"``
    ``lo, hi = numpy.percentile(volume, [0.5, 99.5])`` over all voxels
    (numpy's default linear interpolation); ``y = (x - lo) / (hi - lo) * 255``.
    If ``lo == hi`` (over 99 % of the voxels share one value) the window falls
    back to ``[min, max]`` of the volume.
``"ct"``
    ``x`` is in Hounsfield units (modality LUT already applied);
    ``lo = center - width / 2``, ``hi = lo + width``,
    ``y = (x - lo) / (hi - lo) * 255``.
    Default ``center=40, width=400`` (soft tissue: -160..240 HU).
``"bits"``
    ``y = x / (2**bits_stored - 1) * 255`` (mammograms).  ``bits_stored`` comes
    from the DICOM header (BitsStored); if not given it is the dtype's bit
    depth (8 for uint8, 16 for uint16, 15 for int16: the dtype's maximum).
``"none"``
    Input already 8-bit: ``y = x``.  Values must be integers in 0..255,
    otherwise DataError.
``"auto"`` (default)
    uint8 input -> ``"none"``; else DICOM Modality ``CT`` -> ``"ct"``;
    Modality ``MG`` -> ``"bits"``; anything else -> ``"mr"``.

Then, for every rule: ``y`` is clipped to ``[0, 255]``, rounded half away
from zero (``floor(y + 0.5)``, as ``y >= 0``; same as MATLAB's ``round``) and
cast to uint8.

NaN and infinite values (a NaN-masked float volume: SPM, FSL and others write NaN outside the
brain) are left out of the rule's parameters (the "mr" window is computed over the finite voxels)
and become 0, black, as ``inference.upscale`` shows them to the net (the window's low value).

Rejected with DataError (message names ``source``): empty or non-numeric
input, input with no finite value, and constant results (max == min after the mapping).
"""
import numpy as np

from core.errors import DataError

__all__ = ["RULES", "check_rule", "resolve_rule", "convert", "to_uint8"]

RULES = ("auto", "mr", "ct", "bits", "none")
DEFAULT_PERCENTILES = (0.5, 99.5)
DEFAULT_CT_CENTER = 40.0
DEFAULT_CT_WIDTH = 400.0


def check_rule(rule) -> None:
    """DataError unless ``rule`` is one of ``RULES`` (it usually comes from the user)."""
    if rule not in RULES:
        raise DataError(f"unknown intensity rule {rule!r} (choose from {', '.join(RULES)})")


def resolve_rule(rule, dtype, modality=None) -> str:
    """Return the concrete rule name for ``rule`` ("auto" resolved as documented)."""
    check_rule(rule)
    if rule != "auto":
        return rule
    if np.dtype(dtype) == np.uint8:
        return "none"
    mod = (modality or "").strip().upper()
    return {"CT": "ct", "MG": "bits"}.get(mod, "mr")


def to_uint8(volume, rule="auto", **params) -> np.ndarray:
    """Map ``volume`` (any shape, all slices at once) to uint8 with ``rule``.

    ``params`` are those of :func:`convert`; this drops the parameter report.
    """
    return convert(volume, rule, **params)[0]


def convert(volume, rule="auto", *, source="<array>", modality=None, bits_stored=None,
            center=DEFAULT_CT_CENTER, width=DEFAULT_CT_WIDTH,
            percentiles=DEFAULT_PERCENTILES):
    """Map ``volume`` to uint8 and report the parameters used.

    Args:
        volume: numeric array, typically (slices, H, W); the rule's parameters
            are computed over the whole array.
        rule: one of ``RULES``.
        source: file/folder name used in error messages.
        modality: DICOM Modality (only used by "auto").
        bits_stored: for "bits" (default: the dtype's bit depth).
        center, width: HU window for "ct".
        percentiles: (low, high) percentiles for "mr".

    Returns:
        ``(uint8 array of the same shape, dict)``; the dict holds ``rule`` (the
        rule applied), ``requested_rule`` and the rule's parameters, e.g.
        ``low``/``high`` (the input values mapped to 0 and 255).
    """
    vol = check_numeric(volume, source, nonfinite=True)
    finite = np.isfinite(vol) if vol.dtype.kind == "f" else None
    masked = finite is not None and not finite.all()
    window_values = vol[finite] if masked else vol
    if masked:  # the rules see finite numbers; those pixels are set to black afterwards
        vol = np.where(finite, vol, window_values.min())
    name = resolve_rule(rule, vol.dtype, modality)
    if name == "none":
        y, info = _rule_none(vol, source)
    elif name == "mr":
        y, info = _rule_mr(vol, percentiles, window_values)
    elif name == "ct":
        y, info = _rule_ct(vol, center, width, source)
    else:
        y, info = _rule_bits(vol, bits_stored, source)
    if masked:
        y[~finite] = 0.0
    out = _round_clip(y)
    if out.max() == out.min():
        raise DataError(f"{source}: constant image (every pixel is {int(out.min())} "
                        f"after the {name!r} intensity rule)")
    extra = {"nonfinite_to_black": int((~finite).sum())} if masked else {}
    return out, {"rule": name, "requested_rule": rule, **info, **extra}


def check_numeric(volume, source, nonfinite=False) -> np.ndarray:
    """Reject empty and non-real input, and non-finite values unless ``nonfinite`` (then only an
    image with no finite value at all); why: they cannot be windowed. :func:`convert` and
    ``inference.upscale`` allow them (a NaN-masked volume: black for training, its mask kept when
    upscaled)."""
    vol = np.asarray(volume)
    if vol.dtype == bool:
        vol = vol.astype(np.uint8)
    if vol.dtype.kind not in "uif":
        raise DataError(f"{source}: unsupported pixel type {vol.dtype} (need real numbers)")
    if vol.size == 0:
        raise DataError(f"{source}: image has no pixels")
    finite = np.isfinite(vol) if vol.dtype.kind == "f" else None
    if finite is not None and not finite.all():
        if not nonfinite:
            raise DataError(f"{source}: image contains NaN or infinite values")
        if not finite.any():
            raise DataError(f"{source}: image has no finite values (every pixel is NaN or "
                            "infinite)")
    return vol


def _round_clip(y) -> np.ndarray:
    """Clip to [0, 255] and round half away from zero (floor(y + .5) as y >= 0)."""
    return np.floor(np.clip(y, 0.0, 255.0) + 0.5).astype(np.uint8)


def _linear(vol, lo, hi) -> np.ndarray:
    """Map [lo, hi] linearly onto [0, 255] (float64, not yet clipped).

    Evaluated exactly as documented, (x - lo) / (hi - lo) * 255, so that
    values landing on .5 round the same way as a direct numpy computation.
    """
    return (vol.astype(np.float64) - lo) / (hi - lo) * 255.0


def _rule_none(vol, source):
    """Pass 8-bit data through; anything else is a user error, not silently cast."""
    lo, hi = vol.min(), vol.max()
    if lo < 0 or hi > 255:
        raise DataError(f"{source}: values {lo}..{hi} are outside 0..255 "
                        "(the 'none' intensity rule needs 8-bit data)")
    if vol.dtype.kind == "f" and not np.array_equal(vol, np.round(vol)):
        raise DataError(f"{source}: non-integer values "
                        "(the 'none' intensity rule needs 8-bit data)")
    return vol.astype(np.float64), {}


def percentile_window(values, percentiles=DEFAULT_PERCENTILES):
    """(lo, hi, fell_back): the ``percentiles`` (low, high) of ``values``, or their min and max
    when the two percentiles coincide (fell_back True); lo == hi only for constant values."""
    p_lo, p_hi = (float(p) for p in percentiles)
    if not 0.0 <= p_lo < p_hi <= 100.0:
        raise DataError(f"bad percentiles {percentiles!r}: need 0 <= low < high <= 100")
    lo, hi = (float(v) for v in np.percentile(values, [p_lo, p_hi]))
    fell_back = lo == hi
    if fell_back:
        lo, hi = float(np.min(values)), float(np.max(values))
    return lo, hi, fell_back


def _rule_mr(vol, percentiles, window_values):
    """Percentile window of ``window_values`` (the finite voxels); falls back to [min, max]
    when the percentiles coincide."""
    lo, hi, fallback = percentile_window(window_values, percentiles)
    info = {"percentiles": [float(p) for p in percentiles], "low": lo, "high": hi,
            "minmax_fallback": fallback}
    if lo == hi:
        return np.zeros(vol.shape), info  # constant: reported by the caller
    return _linear(vol, lo, hi), info


def _rule_ct(vol, center, width, source):
    """Fixed HU window [center - width/2, center + width/2]."""
    center, width = float(center), float(width)
    if not width > 0:
        raise DataError(f"{source}: CT window width must be > 0 (got {width})")
    lo = center - width / 2.0
    return _linear(vol, lo, lo + width), {"center": center, "width": width,
                                          "low": lo, "high": lo + width}


def _rule_bits(vol, bits_stored, source):
    """Scale the full stored range 0 .. 2**bits - 1 onto 0..255."""
    bits = _dtype_bits(vol.dtype, source) if bits_stored is None else int(bits_stored)
    if not 1 <= bits <= 32:
        raise DataError(f"{source}: bits_stored must be 1..32 (got {bits_stored})")
    top = float(2 ** bits - 1)
    return _linear(vol, 0.0, top), {"bits_stored": bits, "low": 0.0, "high": top}


def _dtype_bits(dtype, source) -> int:
    """Bit depth of an integer dtype, counted so that 2**bits - 1 is its maximum."""
    if np.dtype(dtype).kind not in "ui":
        raise DataError(f"{source}: the 'bits' intensity rule needs bits_stored "
                        f"for {np.dtype(dtype)} data")
    return int(np.iinfo(dtype).max).bit_length()
