"""The metrics (eval.metrics) in MATLAB's conventions: SSIM against ssim_index.m, PSNR, the border
shaved, rounding to uint8 half away from zero."""
import numpy as np
import pytest
from scipy.signal import correlate2d

from eval.metrics import psnr, shave, ssim, to_uint8

RNG = np.random.RandomState


def ssim_index_m(img1, img2, K=(0.01, 0.03), L=255):
    """Wang et al.'s ssim_index.m, line by line (filter2 = correlation, 'valid')."""
    x, y = np.mgrid[-5:6, -5:6]
    window = np.exp(-(x ** 2 + y ** 2) / (2 * 1.5 ** 2))  # fspecial('gaussian', 11, 1.5)
    window = window / window.sum()
    img1, img2 = img1.astype(np.float64), img2.astype(np.float64)
    C1, C2 = (K[0] * L) ** 2, (K[1] * L) ** 2

    def filter2(img):
        return correlate2d(img, window, mode="valid")

    mu1, mu2 = filter2(img1), filter2(img2)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = filter2(img1 * img1) - mu1_sq
    sigma2_sq = filter2(img2 * img2) - mu2_sq
    sigma12 = filter2(img1 * img2) - mu1_mu2
    ssim_map = (((2 * mu1_mu2 + C1) * (2 * sigma12 + C2))
                / ((mu1_sq + mu2_sq + C1) * (sigma1_sq + sigma2_sq + C2)))
    return ssim_map.mean()


@pytest.mark.parametrize("seed, shape, border", [
    (0, (40, 50), 3), (1, (23, 31), 0), (2, (64, 64), 4), (3, (17, 90), 3)])
def test_ssim_matches_ssim_index_m(seed, shape, border):
    rng = RNG(seed)
    a = rng.randint(0, 256, shape).astype(np.uint8)
    # Correlated pair (a + noise) so SSIM is neither ~0 nor ~1.
    b = np.clip(a + rng.normal(0, 20, shape), 0, 255).astype(np.uint8)
    expected = ssim_index_m(shave(a, border), shave(b, border))
    assert abs(ssim(a, b, border=border) - expected) < 1e-10
    # Unrelated images too (low SSIM).
    c = rng.randint(0, 256, shape).astype(np.uint8)
    assert abs(ssim(a, c, border=border) - ssim_index_m(shave(a, border), shave(c, border))) < 1e-10


def test_identical_images():
    a = RNG(0).randint(0, 256, (30, 30)).astype(np.uint8)
    assert psnr(a, a.copy()) == float("inf")
    assert ssim(a, a.copy()) == pytest.approx(1.0, abs=1e-12)


def test_shave_excludes_the_border():
    a = RNG(1).randint(0, 256, (30, 32)).astype(np.uint8)
    b = a.copy()
    b[:3] ^= 0xFF
    b[:, -3:] ^= 0xFF
    assert psnr(a, b, border=3) == float("inf")
    assert ssim(a, b, border=3) == pytest.approx(1.0, abs=1e-12)
    assert psnr(a, b, border=2) < 20  # the difference is there, just outside the region
    assert shave(a, 3).shape == (24, 26)


def test_to_uint8_rounds_half_away_from_zero():
    # MATLAB's uint8(x*255) rounds the double product x*255 half away from zero. x = (k+.5)/255
    # does not always give a product of exactly k + .5 in floating point, so: where it does, the
    # result must be k + 1 (np.round would give k for even k); where it does not, MATLAB rounds
    # the product it has, which is not a tie, so floor(product + .5) is the MATLAB answer.
    k = np.arange(255)
    x = (k + 0.5) / 255.0
    product = x * 255.0
    exact = product == k + 0.5
    assert exact[[0, 2]].all() and exact.sum() > 100  # 0.5 -> 1 and 2.5 -> 3 are real ties
    got = to_uint8(x)
    assert (got[exact] == k[exact] + 1).all()
    assert (got[~exact] == np.floor(product[~exact] + 0.5)).all()
    assert np.round(2.5) == 2 and to_uint8(np.float64(2.5) / 255) == 3
    assert to_uint8(np.float64(0.5) / 255) == 1


def test_to_uint8_saturates():
    got = to_uint8(np.array([1.2, -0.1, np.inf, -np.inf, np.nan, 1.0, 0.0]))
    assert got.dtype == np.uint8
    assert got.tolist() == [255, 0, 255, 0, 0, 255, 0]


def test_psnr_known_value():
    a = RNG(2).randint(1, 256, (20, 24)).astype(np.uint8)
    # A constant error of one grey level: RMSE 1, PSNR 20*log10(255) = 48.13 dB. a - 1 in uint8
    # would wrap around for 0 if psnr subtracted in uint8; a >= 1 keeps the truth at exactly 1.
    assert psnr(a, a - 1) == pytest.approx(20 * np.log10(255.0), abs=1e-12)
    assert psnr(a - 1, a) == pytest.approx(48.1308036, abs=1e-6)
    assert psnr(a, a - 1, peak=1.0) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        psnr(a, a[:, :-1])
    with pytest.raises(ValueError):
        ssim(a, a[:-1])
