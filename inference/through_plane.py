"""Through-plane super-resolution of a volume with a trained 2-D net (after SMORE): interpolate the
thick slices along their axis (MATLAB's cubic, ``data_prep.one_axis.interpolate``), run the net on
every reformat that contains that axis (with the slice axis last: the x-z and the y-z planes), and
combine the two orientations.

The combination is the mean: the two estimates of a voxel come from two planes that share only
the slice axis, so their errors along the in-plane directions are nearly independent, and their
mean halves the variance of what they do not share. SMORE instead weighs its orientations per
frequency (Fourier burst accumulation); that pays off with many rotated orientations, not with
two orthogonal planes that each hold the slice axis' whole band, and is not done here.

Also here: the scan's NaN and infinite voxels put back (:func:`restore_nonfinite`). The score of
the task on 2-D slices (the trainer's check of a thick-slice run) is evaluation: ``eval.thickslice``.
"""
import numpy as np
from tqdm import tqdm

from data_prep.one_axis import interpolate, slice_axis_last
from inference.upscale_stream import source_index


def estimate_planes(net, volume, axis, bar=None):
    """``net`` on every 2-D plane of ``volume`` that contains ``axis``, for each of the two other
    axes in turn, each plane given with ``axis`` along its columns: [estimate through the first,
    estimate through the second] (``volume``'s shape)."""
    estimates = []
    for other in [a for a in range(3) if a != axis]:
        moved = np.moveaxis(volume, other, 0)  # planes: moved[i] holds ``axis`` and the third axis
        along = 0 if axis < 3 - axis - other else 1  # where ``axis`` lies in each plane
        out = np.empty_like(moved)
        for i, plane in enumerate(moved):
            out[i] = slice_axis_last(net(slice_axis_last(plane, along)), along)
            if bar is not None:
                bar.update()
        estimates.append(np.moveaxis(out, 0, other))
    return estimates


def super_resolve(net, volume01, axis, factor, desc="through-plane"):
    """The volume ([0, 1] scale) ``factor`` times finer along ``axis``: the cubic interpolation,
    then the mean of the net's estimates through the two orientations. float64, not clipped."""
    fine = interpolate(volume01, axis, factor)
    planes = sum(fine.shape[a] for a in range(3) if a != axis)
    with tqdm(total=planes, desc=desc, unit="plane", disable=None) as bar:
        first, second = estimate_planes(net, fine, axis, bar)
    first += second
    first *= 0.5
    return first


def restore_nonfinite(fine, values, axis, factor):
    """Put ``values``' NaN and infinite voxels back into ``fine`` (its estimate, ``factor`` times
    finer along ``axis``; in place), each on the output voxels whose centre lies inside it:
    ``make upscale``'s rule (``inference.upscale_stream.restore_nonfinite``) along the one refined
    axis. Why: a NaN-masked volume (SPM, FSL) keeps its mask; the net saw those voxels as the
    window's low end, so their neighbours are estimated as next to background."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return fine
    inside = source_index(fine.shape[axis], values.shape[axis], factor)  # each output slice's input slice
    for n in np.flatnonzero(bad.any(axis=tuple(a for a in range(3) if a != axis))[inside]):
        source = np.take(values, inside[n], axis=axis)
        out = np.moveaxis(fine, axis, 0)[n]  # a view: writes go into ``fine``
        mask = ~np.isfinite(source)
        out[mask] = source[mask]
    return fine
