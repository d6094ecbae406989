"""The through-plane degradation of a thick-slice scan along ONE image axis, and the training
pairs it gives (self-supervised through-plane super-resolution after SMORE, Zhao et al., IEEE TMI
40(3), 2021).

A scanner's slice k of a volume with ``factor`` times thinner voxels is the thin voxels weighted by
the slice profile centred on slice k. Slice k covers thin voxels k*factor .. k*factor + factor - 1,
so its centre is thin index k*factor + (factor - 1) / 2: imresize's convention (new pixel n lies at
old index (n + 0.5) / factor - 0.5), so that interpolating the thick slices back with
``imresize(..., factor)`` along that axis puts every estimate on the thin voxel it stands for.

The same :func:`thicken` simulates a thick acquisition from an isotropic volume (validation) and
degrades the scan's own in-plane slices into training inputs (:func:`pair`): one definition.
"""
import math

import numpy as np

from .matlab import imresize
from .patches import extract_patches

PROFILES = ("gaussian", "boxcar")
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # a Gaussian's FWHM is 2.3548 sigma
GAUSS_REACH = 4.0  # Gaussian taps out to 4 sigma: what lies beyond weighs < 1e-4 of the sum


def profile_weights(profile, width, factor):
    """(offsets, weights) of one thick slice's taps on the thin grid, relative to its centre
    (offsets are half-integers for an even ``factor``). ``width``: the profile's FWHM (Gaussian)
    or full width (boxcar), in thin voxels. The weights sum to 1."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if not width > 0:
        raise ValueError(f"profile width must be positive, got {width!r}")
    half = GAUSS_REACH * width / FWHM_PER_SIGMA if profile == "gaussian" else width / 2.0 + 0.5
    centre = (factor - 1) / 2.0  # the centre's position within its own block of thin voxels
    first, last = math.ceil(centre - half), math.floor(centre + half)
    offsets = np.arange(first, last + 1) - centre
    if profile == "gaussian":  # the profile sampled at the thin voxels' centres
        sigma = width / FWHM_PER_SIGMA
        weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    else:  # each thin voxel [t - 1/2, t + 1/2] weighted by its overlap with [-width/2, width/2]
        weights = np.clip(np.minimum(offsets + 0.5, width / 2.0) - np.maximum(offsets - 0.5, -width / 2.0),
                          0.0, None)
    return offsets, weights / weights.sum()


def reach(profile, width, factor):
    """How many thin voxels past its own block one thick slice's profile reaches, each side."""
    offsets, _ = profile_weights(profile, width, factor)
    return int(math.ceil(offsets.max() - (factor - 1) / 2.0))


def mirror(indices, n):
    """Indices reflected into 0..n-1 as MATLAB's 'symmetric' padding (..., 1, 0 | 0, 1, ...)."""
    period = 2 * n
    i = np.mod(indices, period)
    return np.where(i < n, i, period - 1 - i)


def thicken(volume, axis, factor, profile="gaussian", width=None):
    """Thick slices of ``volume`` along ``axis``: ``n // factor`` of them (the thin voxels past
    the last whole block are dropped), each the ``profile``-weighted sum of the thin voxels
    around its centre (mirrored at the ends). ``width`` defaults to ``factor`` (a Gaussian of
    FWHM = the slice spacing). float64."""
    x = np.moveaxis(np.asarray(volume, dtype=np.float64), axis, 0)
    width = float(factor if width is None else width)
    count = x.shape[0] // factor
    offsets, weights = profile_weights(profile, width, factor)
    centres = np.arange(count) * factor + (factor - 1) / 2.0
    taps = mirror(np.rint(centres[:, None] + offsets[None, :]).astype(np.intp), x.shape[0])
    out = np.tensordot(weights, x[taps.T], axes=(0, 0))  # sum over the taps
    return np.moveaxis(out, 0, axis)


def interpolate(volume, axis, factor):
    """MATLAB's bicubic ``imresize`` by ``factor`` along ``axis`` only (the other axes copied:
    imresize at scale 1 is exact), for 2-D or 3-D arrays; float64."""
    x = np.moveaxis(np.asarray(volume, dtype=np.float64), axis, 0)
    flat = x.reshape(x.shape[0], -1)
    out = np.empty((x.shape[0] * factor, flat.shape[1]))
    step = max(1, (1 << 22) // out.shape[0])  # bounded temporaries for large volumes
    for c in range(0, flat.shape[1], step):
        part = flat[:, c:c + step]
        out[:, c:c + step] = imresize(part, output_shape=(out.shape[0], part.shape[1]))
    return np.moveaxis(out.reshape((out.shape[0],) + x.shape[1:]), 0, axis)


def degrade(image, axis, factor, profile="gaussian", width=None):
    """``(hr, lr_up)``: ``image`` cropped to whole blocks along ``axis``, and the same thickened
    along ``axis`` and interpolated back to its size (what the net learns to undo)."""
    image = np.asarray(image, dtype=np.float64)
    keep = image.shape[axis] - image.shape[axis] % factor
    hr = np.take(image, np.arange(keep), axis=axis)
    return hr, interpolate(thicken(hr, axis, factor, profile, width), axis, factor)


def slice_axis_last(image, along):
    """The 2-D ``image`` turned so that its axis ``along`` runs along its columns: where the
    thick-slice net learns and meets the slice direction. Its own inverse."""
    return image.T if along == 0 else image


def slice_pairs(volume, axis, factor, patch, label, stride, profile="gaussian", width=None):
    """Training pairs from the thin in-plane slices of ``volume`` (the slices across thick
    ``axis``, values in [0, 1] scale): each slice degraded along each of its two axes in turn
    (:func:`degrade`) and turned so that the degradation runs along its columns (where
    ``inference.through_plane`` puts the slice axis), cut into ``patch``-sided inputs and the
    ``label``-sided centres of the same places (``extract_patches``, at ``stride``). Patches
    whose label is constant (air) teach nothing and are left out, as are slices smaller than one
    patch. float32
    (N, 1, patch, patch), (N, 1, label, label); N may be 0."""
    inputs, labels = [], []
    for image in np.moveaxis(np.asarray(volume), axis, 0):
        for along in (0, 1):
            if min(image.shape) < patch or image.shape[along] // factor * factor < patch:
                continue  # smaller than one patch: nothing to cut
            hr, up = (slice_axis_last(a, along) for a in degrade(image, along, factor, profile, width))
            x, y = extract_patches(hr, up, patch, label, stride)
            keep = y.reshape(len(y), -1).ptp(axis=1) > 0
            inputs.append(x[keep])
            labels.append(y[keep])
    if not inputs:
        return (np.zeros((0, 1, patch, patch), np.float32), np.zeros((0, 1, label, label), np.float32))
    return np.concatenate(inputs), np.concatenate(labels)
