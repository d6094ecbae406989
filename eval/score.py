"""Score an SR method on HR images as the SRCNN release does: degrade, estimate, quantise, compare.

Check on the standard benchmark (not run by the tests: Set5 is not available offline): with the
identity method (bicubic), ``score_method(load_hr_folder("Set5"), lambda x: x)`` should give the
published bicubic means for Set5 x3, 30.39 dB PSNR / 0.8682 SSIM.
"""
import statistics
from pathlib import Path

import numpy as np

from data_prep.degrade import degrade
from core.config import DEFAULT
from core.errors import DataError
from data_prep.io import IMAGE_EXTS, images, list_files, sniff, stem
from data_prep.matlab import modcrop
from eval.metrics import METRICS, SSIM_WINDOW, to_uint8


def score_method(hr_images, method, scale=DEFAULT.scale, border=None, patients=None):
    """PSNR and SSIM of ``method`` on each HR image, and their arithmetic means (as the paper's
    tables average per-image PSNR, not MSE).

    Args:
        hr_images: list of ``(name, uint8 2-D HR image)``.
        method: callable mapping the bicubic-upscaled float image ([0, 1] scale) to its float
            estimate of the same size; ``lambda x: x`` scores bicubic itself.
        scale: the degradation factor (``degrade``).
        border: pixels shaved per side before scoring; ``scale`` by default, as the release.
        patients: {image name: patient} (core.datasets.image_patients) or None: with it each image
            row names its patient and the result has ``"patients"`` (:func:`patient_summary`).

    Returns:
        ``{"images": [{"name", <metric>...}, ...], "mean": {<metric>...}}`` for every metric of
        ``eval.metrics.METRICS`` (PSNR and SSIM), and ``"patients"`` where ``patients`` is given.
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
        who = {} if patients is None else {"patient": patient_of(patients, name)}
        rows.append({"name": name, **who, **{key: metric.score(reference, estimate, border)
                                             for key, metric in METRICS.items()}})
    if not rows:
        raise ValueError("score_method: no images to score")
    mean = {key: float(np.mean([row[key] for row in rows])) for key in METRICS}
    if patients is None:
        return {"images": rows, "mean": mean}
    return {"images": rows, "mean": mean, "patients": patient_summary(rows)}


def patient_of(patients, name):
    if name not in patients:
        raise DataError(f"{name}: a test image the data set's manifest gives no patient (a file "
                        "added to test_images?)")
    return patients[name]


def patient_summary(rows):
    """Per patient aggregation of image rows that name their patient: ``{"n", "mean", "sd",
    "each"}``; ``each``: [{"patient", "images", <metric>...}] (each patient's mean over its
    images, in order of first image); ``mean`` and ``sd``: over those patient means (sd None
    below two patients). A patient counts once however many images it has."""
    groups = {}
    for row in rows:
        groups.setdefault(row["patient"], []).append(row)
    each = [{"patient": p, "images": len(g),
             **{k: statistics.fmean(r[k] for r in g) for k in METRICS}} for p, g in groups.items()]
    mean = {k: statistics.fmean(e[k] for e in each) for k in METRICS}
    sd = {k: statistics.stdev(e[k] for e in each) if len(each) > 1 else None for k in METRICS}
    return {"n": len(each), "mean": mean, "sd": sd, "each": each}


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
