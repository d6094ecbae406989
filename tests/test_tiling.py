"""Tiled inference (inference.net): tiles equal one whole-image pass, for both engines and both
borders; no tile lets a blob pass Caffe's limit; inputs Caffe would abort on are refused with one
line; the upscaler's band-by-band bicubic equals MATLAB's imresize of the whole image.

How equal (docs/exactness.md): with OpenCV, bit for bit (its convolution is its own code, and
inference.tiles keeps every pixel in the same place of OpenCV's blocks), on each of its CPU dispatch
levels. With pycaffe the sums are OpenBLAS's, and some of its kernels (Haswell, Zen) sum a pixel
in an order that depends on where the pixel sits in the GEMM: tiles and one pass then agree
within the float32 rounding bound of inference.rounding, and the uint8 images a user sees within one
grey level on at most tests.helpers.QUANTISED_SHARE of the pixels. Where OpenBLAS's sums do not depend on the
position (its Sandybridge kernels, and SkylakeX's for the tile sizes inference.tiles plans), they are
equal bit for bit: a test shows it in a child process that asks OpenBLAS for Sandybridge's kernels.
"""
import os
import subprocess
import sys

import caffe
import numpy as np
import pytest

from core.config import DEFAULT, ROOT
from core.errors import DataError
from core.machine import blas_info, cpu_flags
from core.nets import deploy_net
from data_prep.matlab import imresize
from inference import tiles, upscale, upscale_stream
from inference.net import SRNet
from eval.metrics import to_uint8
from inference.rounding import forward_bound
from inference.tiles import BLOB_LIMIT
from tests.helpers import assert_within_one_level, deploy, random_params, save_caffemodel

RNG = np.random.RandomState
WHOLE = 1e6  # MB: every test image in one tile
pytestmark = pytest.mark.blas


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiling")
    return {act: save_caffemodel(deploy(act), random_params(deploy(act), seed),
                                 folder / f"{act}.caffemodel")
            for seed, act in enumerate(("relu", "prelu"))}


def covers(tiles, shape):
    """Every output pixel in exactly one tile: bands of rows one under the other, each cut into
    tiles side by side across the whole width."""
    bands = {}
    for t in tiles:
        bands.setdefault((t.row, t.height), []).append(t)
    row = 0
    for (start, height), band in sorted(bands.items()):
        col = 0
        for t in sorted(band, key=lambda t: t.col):
            if (t.row, t.col) != (row, col) or t.width < 1:
                return False
            col += t.width
        if start != row or col != shape[1]:
            return False
        row += height
    return row == shape[0]


def output_bound(net, act, model, image):
    """Per pixel of ``net(image)``: how far a float32 evaluation may be from the exact one
    (inference.rounding); 0 in the bicubic frame, which is copied."""
    (top, _), (left, _) = net._frame()
    weights = caffe.Net(deploy(act), caffe.TEST, weights=model)
    if net.border == "replicate":
        padded = np.pad(image, ((top, net.lost[0] - top), (left, net.lost[1] - left)), mode="edge")
        return forward_bound(deploy(act), weights, padded)[1]
    bound = np.zeros(image.shape)
    inner = forward_bound(deploy(act), weights, image)[1]
    bound[top:top + inner.shape[0], left:left + inner.shape[1]] = inner
    return bound


def assert_tiles_match(engine, tiled, whole, bound):
    """OpenCV: bit for bit. pycaffe: within twice the rounding bound of one evaluation, and the
    uint8 images within one grey level on at most tests.helpers.QUANTISED_SHARE of the pixels."""
    if engine == "opencv":
        np.testing.assert_array_equal(tiled, whole)
        return
    assert np.all(np.abs(tiled - whole) <= 2 * bound)
    assert_within_one_level(to_uint8(tiled), to_uint8(whole))


@pytest.mark.parametrize("sizes", [(), ("f1=7", "f2=3", "f3=3", "n1=16", "n2=8", "label=23")])
def test_halo_and_memory_come_from_the_net(tmp_path, sizes):
    """Read from the net, not assumed 9-1-5: the default net and one of other kernels and widths."""
    cfg = DEFAULT.with_overrides(sizes)
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(str(deploy_net(cfg, "relu")))
    net = SRNet(str(prototxt), save_caffemodel(str(prototxt), random_params(str(prototxt), 0),
                                               tmp_path / "net.caffemodel"))
    lost = (cfg.f1 - 1) + (cfg.f2 - 1) + (cfg.f3 - 1)
    assert net.lost == (lost, lost) and net.receptive_field == (lost + 1, lost + 1)
    blobs = 1 + 2 * cfg.n1 + 2 * cfg.n2 + 1  # data, conv and activation outputs, the SR image
    im2col = sum(k * k * channels for k, channels in ((cfg.f1, 1), (cfg.f2, cfg.n1), (cfg.f3, cfg.n2))
                 if k > 1)  # Caffe convolves 1x1 kernels without a column buffer
    assert net.floats_per_pixel == blobs + im2col


TILING_IMAGE = RNG(11).rand(301, 263) * 1.3 - 0.15  # bicubic overshoot: both signs


def tiled_and_whole(models, engine, border):
    """[(act, whole net, tiled output, one-pass output)] of TILING_IMAGE, with a budget that
    cuts it into at least four tiles of several sizes, some odd."""
    runs = []
    for act, budget in (("relu", 95), ("prelu", 150)):
        whole = SRNet(deploy(act), models[act], engine=engine, border=border, budget_mb=WHOLE)
        tiled = SRNet(deploy(act), models[act], engine=engine, border=border, budget_mb=budget)
        valid = TILING_IMAGE.shape if border == "replicate" else (289, 251)
        tiles = tiled.tile_plan(valid)
        assert len(whole.tile_plan(valid)) == 1 and covers(tiles, valid)
        assert len(tiles) >= 4 and len({t.height for t in tiles} | {t.width for t in tiles}) >= 2
        assert any(n % 2 for t in tiles for n in (t.height, t.width))  # odd sizes
        runs.append((act, whole, tiled(TILING_IMAGE), whole(TILING_IMAGE)))
    return runs


@pytest.mark.parametrize("engine", ["caffe", "opencv"])
@pytest.mark.parametrize("border", ["replicate", "bicubic"])
def test_tiles_equal_one_pass(models, engine, border):
    for act, whole, tiled_out, whole_out in tiled_and_whole(models, engine, border):
        bound = output_bound(whole, act, models[act], TILING_IMAGE) if engine == "caffe" else None
        assert_tiles_match(engine, tiled_out, whole_out, bound)


# OpenBLAS core types whose GEMMs sum each output in an order that does not depend on where it
# sits in the matrix (SkylakeX's, Cooperlake's: for the tile sizes inference.tiles plans)
POSITION_FREE_CORES = ("Sandybridge", "SkylakeX", "Cooperlake")


def test_caffe_tiles_equal_one_pass_bit_for_bit(models):
    core = blas_info().get("core")
    if core not in POSITION_FREE_CORES:
        pytest.skip(f"OpenBLAS runs {core} here, whose sums depend on a pixel's place in the GEMM "
                    "(test_caffe_tiles_bit_for_bit_under_sandybridge runs this in a child process)")
    for border in ("replicate", "bicubic"):
        for _, _, tiled_out, whole_out in tiled_and_whole(models, "caffe", border):
            np.testing.assert_array_equal(tiled_out, whole_out)


def test_caffe_tiles_bit_for_bit_under_sandybridge():
    """The test above in a child process with OPENBLAS_CORETYPE=Sandybridge (set in that child
    only), so that it runs on every machine: tiles feed every pixel exactly the inputs one pass
    does, which only bit-equality shows."""
    if "avx" not in cpu_flags():
        pytest.skip("this CPU lacks AVX, which OpenBLAS's Sandybridge kernels need")
    test = f"{__file__}::test_caffe_tiles_equal_one_pass_bit_for_bit"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                          cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, OPENBLAS_CORETYPE="Sandybridge", GLOG_minloglevel="2"))
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-3000:]


def test_opencv_tiles_bit_for_bit_on_its_avx2_and_sse_code():
    """OpenCV picks its convolution's code by CPU (AVX-512, AVX2, SSE), each summing in its own
    order: the OpenCV tiling tests again in child processes that turn the newer code off
    (OPENCV_CPU_DISABLE, that child only), as a CPU without it would run them."""
    tests = [f"{__file__}::test_tiles_equal_one_pass[{border}-opencv]" for border in ("replicate", "bicubic")]
    for disabled in ("AVX512-SKX", "AVX512-SKX,AVX2,FMA3"):
        env = dict(os.environ, OPENCV_CPU_DISABLE=disabled, GLOG_minloglevel="2")
        features = subprocess.run([sys.executable, "-c", "import cv2; print(cv2.getCPUFeaturesLine())"],
                                  env=env, capture_output=True, text=True, check=True).stdout.split()
        # "*NAME?": dispatched code this CPU has, turned off; NAME absent: this CPU lacks it anyway
        assert all(f"*{name}" not in features for name in disabled.split(",")), (disabled, features)
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=ROOT, capture_output=True, text=True, env=env)
        assert done.returncode == 0 and "2 passed" in done.stdout, (disabled, done.stdout[-3000:])


@pytest.mark.parametrize("engine", ["caffe", "opencv"])
def test_forward_valid_and_narrow_images_tile(models, engine):
    model = models["relu"]
    whole = SRNet(deploy("relu"), model, engine=engine, budget_mb=WHOLE)
    tiled = SRNet(deploy("relu"), model, engine=engine, budget_mb=100)
    for shape in ((2000, 29), (31, 2000)):  # one column / one row of tiles
        x = RNG(sum(shape)).rand(*shape)
        assert len(tiled.tile_plan((shape[0] - 12, shape[1] - 12))) > 1
        bound = forward_bound(deploy("relu"), caffe.Net(deploy("relu"), caffe.TEST, weights=model),
                              x)[1] if engine == "caffe" else None
        assert_tiles_match(engine, tiled.forward_valid(x), whole.forward_valid(x), bound)


def test_plan_for_a_mammogram_keeps_every_blob_below_caffes_limit(models):
    """A full-size mammogram: 4664 x 3064 x3 is 13992 x 9192, about 9 times Caffe's blob limit for
    64-channel activations as one pass; any budget gives tiles whose largest blob fits."""
    shape = (13992, 9192)
    assert 64 * (shape[0] + 12) * (shape[1] + 12) > BLOB_LIMIT
    for budget in (200, 512, 1e9):
        net = SRNet(deploy("relu"), models["relu"], budget_mb=budget)
        tiles = net.tile_plan(shape)
        assert covers(tiles, shape)
        for t in tiles:
            pixels = (t.height + t.extra_rows + 12) * (t.width + 12)
            assert pixels <= net.max_tile_pixels()
            assert 800 * pixels <= BLOB_LIMIT  # conv3's im2col buffer, the widest blob
            if budget < 1e9:
                assert pixels * net.floats_per_pixel * 4 <= budget * 1e6
    assert len(SRNet(deploy("relu"), models["relu"]).tile_plan(shape)) > 100


def test_a_budget_too_small_is_one_line(models):
    with pytest.raises(DataError, match=r"budget 5 MB is too small .* needs at least \d+ MB"):
        SRNet(deploy("relu"), models["relu"], budget_mb=5)(RNG(0).rand(200, 200))
    with pytest.raises(DataError, match="must be positive"):
        SRNet(deploy("relu"), models["relu"], budget_mb=0)


# ------------------------------------------------------------- what Caffe would abort on

def test_inputs_caffe_would_abort_on_are_refused(models, tmp_path):
    net = SRNet(deploy("relu"), models["relu"], budget_mb=WHOLE)
    for bad, message in ((RNG(0).rand(20, 20, 3), "2-D .one-channel. image"),
                         (np.zeros((0, 5)), "non-empty"),
                         (np.full((20, 20), np.nan), "not finite"),
                         (np.full((20, 20), 1e39), "not finite as float32")):
        with pytest.raises(DataError, match=message):
            net(bad)
    # Valid convolutions on less than the receptive field: Caffe aborts on the negative size.
    with pytest.raises(DataError, match="at least 13x13"):
        net.forward_valid(RNG(0).rand(12, 40))
    # A net whose input has 3 channels: Caffe aborts on the first grey image it is given.
    rgb = tmp_path / "rgb.prototxt"
    text = open(deploy("relu")).read()
    rgb.write_text(text.replace("dim: 1\n      dim: 33", "dim: 3\n      dim: 33"))
    rgb_model = save_caffemodel(str(rgb), random_params(str(rgb), 0), tmp_path / "rgb.caffemodel")
    with pytest.raises(DataError, match="has shape .1, 3, 33, 33.; SRNet needs 1 channel"):
        SRNet(str(rgb), rgb_model)


# ------------------------------------------------------------- the upscaler's bicubic bands

def test_bicubic_rows_equal_imresize_of_the_whole_image():
    x = RNG(3).rand(41, 29) * 1.2 - 0.1
    rows, shape = upscale_stream.bicubic_rows(x, 3)
    whole = imresize(x, 3)
    assert shape == whole.shape == (123, 87)
    for a, b in ((0, 123), (0, 1), (5, 40), (100, 123), (61, 62)):
        np.testing.assert_array_equal(rows(a, b), whole[a:b])


def test_upscale_slice_by_bands_and_tiles_equals_the_whole_pipeline(models):
    """The streaming path (bicubic by bands, net by tiles) equals the net on imresize of the
    whole slice, what inference.upscale did before (as tiles equal one pass)."""
    x = RNG(5).rand(120, 97)
    for engine in ("caffe", "opencv"):
        tiled = SRNet(deploy("prelu"), models["prelu"], engine=engine, budget_mb=150)
        whole = SRNet(deploy("prelu"), models["prelu"], engine=engine, budget_mb=WHOLE)
        assert len(tiled.tile_plan((360, 291))) > 4
        out = np.full((360, 291), np.nan)
        assert upscale_stream.upscale_slice(tiled, x, 3, out=out) is out
        upscaled = imresize(x, 3)
        bound = output_bound(whole, "prelu", models["prelu"], upscaled) if engine == "caffe" else None
        assert_tiles_match(engine, out, whole(upscaled), bound)


def test_the_default_budget_runs_the_data_sets_test_images_in_one_pass(models):
    """make eval and the trainer's test: 384x384 test images (396x396 padded) are one pass at the
    default budget, as before tiling; inference.upscale's flag has the same default."""
    assert upscale.DEFAULT_BUDGET_MB == tiles.DEFAULT_BUDGET_MB
    for engine in ("caffe", "opencv"):
        net = SRNet(deploy("relu"), models["relu"], engine=engine)
        assert len(net.tile_plan((384, 384))) == 1
