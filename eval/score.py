"""Score an SR method on HR images as the SRCNN release does: degrade, estimate, quantise, compare.

Check on the standard benchmark (not run by the tests: Set5 is not available offline): with the
identity method (bicubic), ``score_method(load_hr_folder("Set5"), lambda x: x)`` should give the
published bicubic means for Set5 x3, 30.39 dB PSNR / 0.8682 SSIM.
"""
from pathlib import Path

import numpy as np

from data_prep.degrade import degrade
from core.config import DEFAULT
from core.errors import DataError
from data_prep.io import IMAGE_EXTS, images, list_files, sniff, stem
from data_prep.matlab import modcrop
from eval.metrics import METRICS, SSIM_WINDOW, to_uint8


def score_method(hr_images, method, scale=DEFAULT.scale, border=None):
    """PSNR and SSIM of ``method`` on each HR image, and their arithmetic means (as the paper's
    tables average per-image PSNR, not MSE).

    Args:
        hr_images: list of ``(name, uint8 2-D HR image)``.
        method: callable mapping the bicubic-upscaled float image ([0, 1] scale) to its float
            estimate of the same size; ``lambda x: x`` scores bicubic itself.
        scale: the degradation factor (``degrade``).
        border: pixels shaved per side before scoring; ``scale`` by default, as the release.

    Returns:
        ``{"images": [{"name", <metric>...}, ...], "mean": {<metric>...}}`` for every metric of
        ``eval.metrics.METRICS`` (PSNR and SSIM).
    """
    border = scale if border is None else border
    rows = []
    for name, image in hr_images:
        _check_size(name, image, scale, border)
        hr, upscaled = degrade(image, scale)
        estimate = np.asarray(method(upscaled))
        if estimate.shape != upscaled.shape:
            raise ValueError(f"{name}: method returned shape {estimate.shape}, "
                             f"expected {upscaled.shape}")
        reference, estimate = to_uint8(hr), to_uint8(estimate)
        rows.append({"name": name, **{key: metric.score(reference, estimate, border)
                                      for key, metric in METRICS.items()}})
    if not rows:
        raise ValueError("score_method: no images to score")
    mean = {key: float(np.mean([row[key] for row in rows])) for key in METRICS}
    return {"images": rows, "mean": mean}


def _check_size(name, image, scale, border):
    """DataError unless the modcropped, shaved image still holds an SSIM window."""
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"{name}: need a uint8 2-D image, got {image.dtype} {image.shape}")
    side = min(modcrop(image, scale).shape) - 2 * border
    if side < SSIM_WINDOW:
        raise DataError(f"{name}: image {image.shape[0]}x{image.shape[1]} is too small to score "
                        f"(needs {SSIM_WINDOW + 2 * border} px per side after modcrop)")


def load_hr_folder(path):
    """The 2-D pictures of a folder (``data_prep.io.IMAGE_EXTS``: png, tif, bmp, jpg; natural
    name order, as data preparation lists folders) as ``(stem, uint8 HxW)``.

    Colour images become MATLAB's ``rgb2ycbcr`` luma Y, as the release's demo does (so an RGB
    file with equal channels is mapped to 16..235, as in MATLAB); alpha is dropped. Only 8-bit
    files are accepted. DataError if the folder has no images or a file cannot be read.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    files = [p for p in list_files(folder) if sniff(p) == "image"]
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_EXTS)})")
    return [(stem(p, IMAGE_EXTS), _read_grey(p)) for p in files]


def _read_grey(path):
    """One 8-bit picture as uint8 grey (Y of colour)."""
    image = images.read(path)
    if image.dtype != np.uint8:
        raise DataError(f"{path}: {image.dtype} image, only 8-bit images are supported")
    return images.to_grey(image, path)
