"""eval.regions: PSNR and SSIM split into the dark region and the rest, and its command line."""
import numpy as np
import pytest

from eval.metrics import psnr, ssim
from eval.regions import main as regions_main, region_scores
from tests.helpers import make_run, rng_image, write_png

pytestmark = pytest.mark.blas  # numbers summed by OpenBLAS (tools/blas_kernels.py)


def half_dark(shape=(40, 46)):
    """Left half black, right half textured grey (100..199)."""
    img = np.zeros(shape, np.uint8)
    img[:, shape[1] // 2:] = 100 + rng_image((shape[0], shape[1] - shape[1] // 2), 100, np.uint8)
    return img


def test_an_error_in_the_dark_half_shows_there_and_not_in_the_bright_half():
    ref = half_dark()
    est = ref.copy()
    est[:, :10] = 5  # well inside the dark half: no SSIM window centred in the bright half sees it
    got = region_scores(ref, est, border=3, dark=20)
    share, dark_psnr, dark_ssim = got["dark"]
    assert share == pytest.approx(20 / 40) and 0 < dark_ssim < 1  # columns 3..22 of 3..42
    shaved = ref[3:-3, 3:-3] < 20
    assert dark_psnr == pytest.approx(20 * np.log10(255 / np.sqrt(np.mean(np.where(
        shaved, (est[3:-3, 3:-3].astype(float) - ref[3:-3, 3:-3]) ** 2, np.nan)[shaved]))))
    assert got["bright"][1] == float("inf") and got["bright"][2] == pytest.approx(1.0)


def test_the_regions_together_give_the_whole_image_scores():
    ref, est = half_dark(), half_dark()
    est = np.clip(est.astype(int) + rng_image(est.shape, 7, np.uint8) - 3, 0, 255).astype(np.uint8)
    got = region_scores(ref, est, border=3, dark=20)
    (a, pa, sa), (b, pb, sb) = got["dark"], got["bright"]
    mse = a * 255 ** 2 / 10 ** (pa / 10) + b * 255 ** 2 / 10 ** (pb / 10)
    assert 20 * np.log10(255 / np.sqrt(mse)) == pytest.approx(psnr(ref, est, 3))
    pad_share = np.mean(ref[8:-8, 8:-8] < 20)  # the SSIM map's pixels are 5 px further in
    assert pad_share * sa + (1 - pad_share) * sb == pytest.approx(ssim(ref, est, 3))


def test_the_identity_net_scores_as_bicubic_on_the_command_line(tmp_path, model, capsys):
    (tmp_path / "hr").mkdir()
    for k in range(2):
        write_png(tmp_path / "hr" / f"{k}.png", half_dark((48, 51)))
    run = make_run(tmp_path, model)
    assert regions_main(["--hr", str(tmp_path / "hr"), "--run", str(run)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[1].startswith("| bicubic |") and rows[2].startswith("| iteration 20 |")
    assert rows[1].split("|")[2:] == rows[2].split("|")[2:]
    assert regions_main(["--hr", str(tmp_path / "hr"), "--run", str(run), "--iters", "7"]) == 2
    assert "no snapshot of iteration 7" in capsys.readouterr().err
