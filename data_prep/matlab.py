"""MATLAB-compatible image helpers: ``imresize`` (bicubic), ``rgb2ycbcr`` luma, ``modcrop``.

SRCNN's training and test data were made in MATLAB, and PSNR moves by tenths of a dB when
the degradation differs, so these reproduce MATLAB's arithmetic rather than PIL's or
OpenCV's bicubic (different kernel constant, no antialiasing, different rounding).
"""
import math

import numpy as np

BOUNDARIES = ("symmetric", "replicate")


def round_half_away(x):
    """Round half away from zero, as MATLAB's ``round`` and ``uint8()`` do.

    ``np.round`` rounds half to even (2.5 -> 2), which MATLAB never does.
    """
    x = np.asarray(x)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _cubic(x):
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    absx = np.abs(x)
    absx2 = absx ** 2
    absx3 = absx ** 3
    near = (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1)
    far = (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((1 < absx) & (absx <= 2))
    return near + far


def _boundary_indices(indices, in_len, boundary):
    """Map 1-based tap indices that fall outside 1..in_len back into the image (0-based)."""
    if boundary == "symmetric":
        # Current MATLAB: the index sequence 1..n, n..1 repeats, so the edge pixel is doubled.
        aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
        return aux[np.mod(indices - 1, 2 * in_len)]
    return np.clip(indices, 1, in_len) - 1  # MATLAB before 2007 clamped to the edge


def _contributions(in_len, out_len, scale, boundary):
    """Weights and 0-based source indices, each (out_len, taps), as MATLAB's contributions()."""
    kernel, width = _cubic, 4.0
    if scale < 1:
        # Antialiasing: stretch the kernel by 1/scale so it low-passes before decimating.
        kernel = lambda x: scale * _cubic(scale * x)  # noqa: E731
        width = width / scale
    u = np.arange(1, out_len + 1) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    indices = left[:, None] + np.arange(math.ceil(width) + 2)
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # MATLAB drops tap columns whose weights are all zero (the P = ceil(width) + 2 taps
    # over-cover the kernel). For finite input they add exact zeros, but kept, an inf/NaN
    # pixel under a dropped tap would turn its neighbours NaN (0 * inf) where MATLAB's don't.
    keep = np.any(weights != 0, axis=0)
    indices = _boundary_indices(indices[:, keep].astype(np.int64), in_len, boundary)
    return weights[:, keep], indices


def _resize_axis(img, axis, out_len, scale, boundary):
    """One 1-D pass along ``axis``; uint8 is rounded and saturated after it, as in MATLAB."""
    weights, indices = _contributions(img.shape[axis], out_len, scale, boundary)
    src = np.moveaxis(img, axis, 0).astype(np.float64)
    shape = (out_len,) + (1,) * (src.ndim - 1)
    out = np.zeros((out_len,) + src.shape[1:])
    # Loop over the few taps, not pixels. Float results match the MATLAB vectors to ~1e-15,
    # not bit for bit: summation order differs slightly (uint8 results match exactly).
    for k in range(weights.shape[1]):
        out += weights[:, k].reshape(shape) * src[indices[:, k]]
    if img.dtype == np.uint8:
        out = np.clip(round_half_away(out), 0, 255).astype(np.uint8)
    else:
        out = out.astype(img.dtype, copy=False)
    return np.moveaxis(out, 0, axis)


def _scales_and_shape(in_shape, scale, output_shape):
    """Per-dimension (scale, out_len) for rows and columns, validated."""
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize: give exactly one of scale or output_shape")
    if scale is not None:
        scales = np.broadcast_to(np.asarray(scale, dtype=np.float64), (2,))
        if not np.all(scales > 0):
            raise ValueError(f"imresize: scale must be positive, got {scale!r}")
        # MATLAB: output size is ceil(scale * size), and the kernel uses the given scale.
        return [(s, math.ceil(s * n)) for s, n in zip(scales, in_shape)]
    if len(output_shape) != 2 or any(int(n) != n or n <= 0 for n in output_shape):
        raise ValueError(
            f"imresize: output_shape must be 2 positive integers, got {output_shape!r}")
    return [(n_out / n_in, int(n_out)) for n_out, n_in in zip(output_shape, in_shape)]


def imresize(img, scale=None, output_shape=None, boundary="symmetric"):
    """Resize like MATLAB's ``imresize(img, scale)`` / ``imresize(img, [rows cols])``, bicubic.

    Args:
        img: HxW or HxWxC array, uint8 or float. Channels are resized independently.
        scale: scalar or (row, col) pair; output size is ``ceil(scale * size)``.
        output_shape: (rows, cols); the per-dimension scale is then ``out / in``.
        boundary: "symmetric" (MATLAB since 2007, mirrored indices) or "replicate"
            (earlier MATLAB, clamped indices).

    Returns:
        uint8 for uint8 input, rounded half away from zero and saturated after each 1-D
        pass; otherwise the input float dtype (computed in float64), neither rounded nor
        clipped.
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize: image must be 2-D or 3-D, got ndim={img.ndim}")
    if img.size == 0:
        raise ValueError(f"imresize: image is empty, shape {img.shape}")
    if img.dtype != np.uint8 and not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"imresize: dtype must be uint8 or float, got {img.dtype}")
    if boundary not in BOUNDARIES:
        raise ValueError(f"imresize: boundary must be one of {BOUNDARIES}, got {boundary!r}")
    dims = _scales_and_shape(img.shape[:2], scale, output_shape)
    # MATLAB resizes the dimension with the smaller scale first (stable sort: rows on a tie).
    for axis in sorted(range(2), key=lambda a: dims[a][0]):
        img = _resize_axis(img, axis, dims[axis][1], dims[axis][0], boundary)
    return img


def rgb2ycbcr(rgb):
    """Luma (Y) of a uint8 RGB image as MATLAB's ``rgb2ycbcr`` gives it, as uint8 HxW.

    Y = round(16 + (65.481 R + 128.553 G + 24.966 B) / 255), half away from zero.
    Evaluated exactly in integers: in double arithmetic the 194 RGB triples whose Y is an
    exact .5 tie land on either side depending on the order of operations. Grey pixels
    (R = G = B) never tie.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb2ycbcr: need uint8 HxWx3, got {rgb.dtype} {rgb.shape}")
    num = rgb.astype(np.int64) @ np.array([65481, 128553, 24966], dtype=np.int64)
    # num >= 0, so half away from zero is floor((num + half) / den); den = 255 * 1000.
    return (16 + (num + 127500) // 255000).astype(np.uint8)


def modcrop(img, scale):
    """Crop H and W down to multiples of ``scale``, keeping the top-left (SRCNN's modcrop.m)."""
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"modcrop: image must be 2-D or 3-D, got ndim={img.ndim}")
    if int(scale) != scale or scale <= 0:
        raise ValueError(f"modcrop: scale must be a positive integer, got {scale!r}")
    h, w = (n - n % int(scale) for n in img.shape[:2])
    return img[:h, :w]
