"""Image quality metrics with the SRCNN release's MATLAB conventions, each one a named parameter.

The release scores ``uint8(im * 255)`` images (rounded half away from zero, saturated), shaves
``scale`` pixels off every side, and computes PSNR as ``20*log10(255/rmse)`` in double; SSIM is
Wang et al.'s ``ssim_index.m`` (11x11 Gaussian window, sigma 1.5, K = 0.01, 0.03, L = 255, mean of
the SSIM map over the 'valid' region). Scores of unquantised float outputs are not comparable
with the published numbers.
"""
import numpy as np
from skimage.metrics import structural_similarity

from core.config import DEFAULT
from data_prep.matlab import round_half_away

SSIM_WINDOW = 11  # ssim_index.m's fspecial('gaussian', 11, 1.5)


def to_uint8(x):
    """MATLAB's ``uint8(x * 255)`` for a float image in [0, 1] scale.

    The product is taken in float64, rounded half away from zero and saturated to [0, 255];
    NaN becomes 0, as in MATLAB.
    """
    x = np.asarray(x, dtype=np.float64) * 255.0
    x = np.where(np.isnan(x), 0.0, x)
    return np.clip(round_half_away(x), 0, 255).astype(np.uint8)


def shave(img, border):
    """``img`` without ``border`` pixels on each side (rows and columns)."""
    img = np.asarray(img)
    if border < 0 or 2 * border >= min(img.shape[:2]):
        raise ValueError(f"shave: border {border} leaves nothing of a {img.shape[:2]} image")
    return img[border:img.shape[0] - border, border:img.shape[1] - border]


def _shaved_pair(reference, estimate, border):
    """Both images shaved and as float64, after checking they are 2-D and of one shape."""
    reference, estimate = np.asarray(reference), np.asarray(estimate)
    if reference.shape != estimate.shape:
        raise ValueError(f"shape mismatch: reference {reference.shape}, estimate {estimate.shape}")
    if reference.ndim != 2:
        raise ValueError(f"need 2-D images, got shape {reference.shape}")
    # float64 before subtracting: uint8 differences would wrap around.
    return (shave(reference, border).astype(np.float64),
            shave(estimate, border).astype(np.float64))


def psnr(reference, estimate, border=DEFAULT.scale, peak=255.0):
    """PSNR in dB of quantised 2-D images over the region inside ``border``; ``inf`` if equal."""
    a, b = _shaved_pair(reference, estimate, border)
    return psnr_of(a - b, peak)


def psnr_of(differences, peak=255.0):
    """PSNR in dB of any set of pixel differences (float64): ``inf`` when all are 0, NaN when
    there are none (an empty region)."""
    differences = np.asarray(differences, dtype=np.float64)
    if differences.size == 0:
        return float("nan")
    mse = np.mean(differences ** 2)
    if mse == 0:
        return float("inf")
    return float(20.0 * np.log10(peak / np.sqrt(mse)))


def ssim(reference, estimate, border=DEFAULT.scale):
    """Mean SSIM of quantised 2-D images (``ssim_index.m``) over the region inside ``border``.

    scikit-image filters with the same separable 11-tap Gaussian (truncate 3.5 at sigma 1.5) and
    averages the map after cropping (11 - 1) // 2 = 5 px per side: exactly the pixels MATLAB's
    ``filter2(..., 'valid')`` keeps, so its padding mode never reaches the mean.
    """
    return float(ssim_map(reference, estimate, border).mean())


def ssim_map(reference, estimate, border=DEFAULT.scale):
    """The SSIM map whose mean :func:`ssim` is: one value per pixel of the shaved image that
    an 11x11 window fits around ((11 - 1) // 2 = 5 px less per side, MATLAB's 'valid')."""
    a, b = _shaved_pair(reference, estimate, border)
    if min(a.shape) < SSIM_WINDOW:
        raise ValueError(f"ssim: shaved image {a.shape} is smaller than the "
                         f"{SSIM_WINDOW}x{SSIM_WINDOW} window")
    _, full = structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=255, K1=0.01, K2=0.03, full=True)
    pad = (SSIM_WINDOW - 1) // 2
    return full[pad:-pad, pad:-pad]


class Metric:
    """One image metric as every table, CSV, curve and the trainer's periodic test show it."""

    def __init__(self, title, unit, decimals, score):
        self.title, self.unit, self.decimals, self.score = title, unit, decimals, score

    def format(self, value):
        """The value as the tables print it (PSNR to 0.01 dB, SSIM to 1e-4, as the paper)."""
        return f"{value:.{self.decimals}f}"


# The one list of metrics: name -> Metric. Scoring computes each, in this order, for every image.
METRICS = {
    "psnr": Metric("PSNR", "dB", 2, psnr),
    "ssim": Metric("SSIM", "", 4, ssim),
}
