"""Tiled inference (eval.infer): tiles equal one whole-image pass bit for bit, for both engines and
both borders; no tile lets a blob pass Caffe's limit; inputs Caffe would abort on are refused with
one line; the upscaler's band-by-band bicubic equals MATLAB's imresize of the whole image."""
import numpy as np
import pytest

from core.errors import DataError
from data_prep.matlab import imresize
from eval import tiles, upscale, upscale_stream
from eval.infer import SRNet
from eval.tiles import BLOB_LIMIT
from tests.helpers import deploy, random_params, save_caffemodel

RNG = np.random.RandomState
WHOLE = 1e6  # MB: every test image in one tile


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


def test_halo_comes_from_the_net(models):
    net = SRNet(deploy("relu"), models["relu"])
    assert net.lost == (12, 12) and net.receptive_field == (13, 13)
    # Blobs: data 1 + conv1 64 + act1 64 + conv2 32 + act2 32 + conv3 1; im2col: 81 + 800.
    assert net.floats_per_pixel == 194 + 81 + 800


@pytest.mark.parametrize("engine", ["caffe", "opencv"])
@pytest.mark.parametrize("border", ["replicate", "bicubic"])
def test_tiles_equal_one_pass_bit_for_bit(models, engine, border):
    image = RNG(11).rand(301, 263) * 1.3 - 0.15  # bicubic overshoot: both signs
    for act, budget in (("relu", 95), ("prelu", 150)):
        whole = SRNet(deploy(act), models[act], engine=engine, border=border, budget_mb=WHOLE)
        tiled = SRNet(deploy(act), models[act], engine=engine, border=border, budget_mb=budget)
        valid = image.shape if border == "replicate" else (289, 251)
        tiles = tiled.tile_plan(valid)
        assert len(whole.tile_plan(valid)) == 1 and covers(tiles, valid)
        assert len(tiles) >= 4 and len({t.height for t in tiles} | {t.width for t in tiles}) >= 2
        assert any(n % 2 for t in tiles for n in (t.height, t.width))  # odd sizes
        np.testing.assert_array_equal(tiled(image), whole(image))


@pytest.mark.parametrize("engine", ["caffe", "opencv"])
def test_forward_valid_and_narrow_images_tile_exactly(models, engine):
    model = models["relu"]
    whole = SRNet(deploy("relu"), model, engine=engine, budget_mb=WHOLE)
    tiled = SRNet(deploy("relu"), model, engine=engine, budget_mb=100)
    for shape in ((2000, 29), (31, 2000)):  # one column / one row of tiles
        x = RNG(sum(shape)).rand(*shape)
        assert len(tiled.tile_plan((shape[0] - 12, shape[1] - 12))) > 1
        np.testing.assert_array_equal(tiled.forward_valid(x), whole.forward_valid(x))


def test_plan_for_a_mammogram_keeps_every_blob_below_caffes_limit(models):
    """The issue's image: 4664 x 3064 x3 is 13992 x 9192, about 9 times Caffe's blob limit for
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
    whole slice: what eval.upscale did before, bit for bit."""
    x = RNG(5).rand(120, 97)
    for engine in ("caffe", "opencv"):
        tiled = SRNet(deploy("prelu"), models["prelu"], engine=engine, budget_mb=150)
        whole = SRNet(deploy("prelu"), models["prelu"], engine=engine, budget_mb=WHOLE)
        assert len(tiled.tile_plan((360, 291))) > 4
        out = np.full((360, 291), np.nan)
        assert upscale_stream.upscale_slice(tiled, x, 3, out=out) is out
        np.testing.assert_array_equal(out, whole(imresize(x, 3)))


def test_the_default_budget_runs_the_data_sets_test_images_in_one_pass(models):
    """make eval and the trainer's test: 384x384 test images (396x396 padded) are one pass at the
    default budget, as before tiling; eval.upscale's flag has the same default."""
    assert upscale.DEFAULT_BUDGET_MB == tiles.DEFAULT_BUDGET_MB
    for engine in ("caffe", "opencv"):
        net = SRNet(deploy("relu"), models["relu"], engine=engine)
        assert len(net.tile_plan((384, 384))) == 1
