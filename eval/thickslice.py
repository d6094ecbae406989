"""The thick-slice task scored on 2-D slices (:func:`score_one_axis`: the trainer's check of a
thick-slice run); the through-plane pass itself is inference (``inference.through_plane``)."""
import numpy as np

from data_prep.one_axis import degrade, slice_axis_last
from eval.metrics import METRICS, to_uint8


def score_one_axis(hr_images, method, factor, profile, width, border=None):
    """PSNR and SSIM of ``method`` on each image degraded along each of its axes in turn as the
    scan's slice direction is (``data_prep.one_axis.degrade``: ``factor``, ``profile`` of
    ``width`` px), and their means: ``eval.score.score_method``'s conventions (8-bit, ``border``
    px shaved, ``factor`` by default) for the thick-slice task. ``method`` maps the cubic
    interpolation along that axis ([0, 1] scale) to its estimate; ``lambda x: x`` scores the
    cubic itself. Rows are named ``<image>/axis<k>``."""
    border = factor if border is None else border
    rows = []
    for name, image in hr_images:
        for along in (0, 1):
            hr, up = degrade(np.asarray(image, np.float64) / 255.0, along, factor, profile, width)
            estimate = slice_axis_last(np.asarray(method(slice_axis_last(up, along))), along)
            reference, estimate = to_uint8(hr), to_uint8(estimate)
            rows.append({"name": f"{name}/axis{along}",
                         **{key: metric.score(reference, estimate, border)
                            for key, metric in METRICS.items()}})
    if not rows:
        raise ValueError("score_one_axis: no images to score")
    return {"images": rows, "mean": {key: float(np.mean([r[key] for r in rows])) for key in METRICS}}
