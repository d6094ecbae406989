"""Through-plane super-resolution of a volume with a trained 2-D net (after SMORE): interpolate the
thick slices along their axis (MATLAB's cubic, ``data_prep.one_axis.interpolate``), run the net on
every reformat that contains that axis (with the slice axis last: the x-z and the y-z planes), and
combine the two orientations.

With ``flip`` each reformat is also given to the net mirrored along the slice axis and the two
estimates are averaged (test-time augmentation): the slice profile and the interpolation are
symmetric along that axis, the net's 9x9 and 5x5 filters need not be, so what the net gets wrong
in one direction it does not get wrong in the mirrored one. Mirroring across the slice axis (the
reformat's rows reversed) adds little beside it; a transpose would turn the blur onto the other
axis, a task the net was not trained for.

The combination of the orientations is the mean: the two estimates of a voxel come from two
planes that share only the slice axis, so their errors along the in-plane directions are nearly
independent, and their mean halves the variance of what they do not share. SMORE instead weighs
its orientations per frequency (Fourier burst accumulation); that pays off with many rotated
orientations, not with two orthogonal planes that each hold the slice axis' whole band, and is not
done here.

Also here: the scan's NaN and infinite voxels put back (:func:`restore_nonfinite`). The score of
the task on 2-D slices (the trainer's check of a thick-slice run) is evaluation: ``eval.thickslice``.
"""
import numpy as np
from tqdm import tqdm

from data_prep.one_axis import interpolate, slice_axis_last
from inference.upscale_stream import source_index


def mirrored_too(net):
    """``net`` run on a plane and on the plane mirrored along its columns (the slice axis, where
    :func:`estimate_planes` puts it), the mirrored estimate mirrored back: their mean."""
    def both(plane):
        estimate = np.array(net(plane), dtype=np.float64)  # a copy: a net may hand back its input
        estimate += net(plane[:, ::-1])[:, ::-1]
        estimate *= 0.5
        return estimate
    return both


def estimate_planes(net, volume, axis, bar=None, flip=False):
    """``net`` on every 2-D plane of ``volume`` that contains ``axis``, for each of the two other
    axes in turn, each plane given with ``axis`` along its columns: [estimate through the first,
    estimate through the second] (``volume``'s shape). ``flip``: each plane's estimate is the mean
    of the net on it and on it mirrored along ``axis`` (:func:`mirrored_too`)."""
    net = mirrored_too(net) if flip else net
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


def super_resolve(net, volume01, axis, factor, desc="through-plane", flip=False):
    """The volume ([0, 1] scale) ``factor`` times finer along ``axis``: the cubic interpolation,
    then the mean of the net's estimates through the two orientations (each also mirrored along
    ``axis`` with ``flip``). float64, not clipped."""
    fine = interpolate(volume01, axis, factor)
    planes = sum(fine.shape[a] for a in range(3) if a != axis)
    with tqdm(total=planes, desc=desc, unit="plane", disable=None) as bar:
        first, second = estimate_planes(net, fine, axis, bar, flip)
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
