"""data_prep.matlab against MATLAB-equivalent vectors and hand-computed values."""
import json
from pathlib import Path

import numpy as np
import pytest

from data_prep.matlab import imresize, modcrop, rgb2ycbcr, round_half_away

VECTORS = Path(__file__).parent / "data" / "imresize_matlab.npz"


def _load_vectors():
    with np.load(VECTORS) as npz:
        meta = json.loads(str(npz["meta_json"]))
        return meta, {key: npz[key] for key in npz.files if key != "meta_json"}


META, ARRAYS = _load_vectors()


@pytest.mark.parametrize("case", sorted(META))
def test_imresize_matches_matlab(case):
    params = META[case]
    src, want = ARRAYS[f"{case}__in"], ARRAYS[f"{case}__out"]
    got = imresize(src, scale=params["scale"], output_shape=params["output_shape"],
                   boundary=params["boundary"])
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    if params["dtype"] == "uint8":
        assert np.count_nonzero(got != want) == 0
    else:
        assert np.max(np.abs(got - want)) <= 1e-10


def test_imresize_rgb_resizes_channels_independently():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(31, 20, 3), dtype=np.uint8)
    got = imresize(rgb, 1 / 3)
    assert got.shape == (11, 7, 3) and got.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(got[..., c], imresize(rgb[..., c], 1 / 3))


def test_imresize_keeps_float32():
    img = np.linspace(0, 1, 12 * 9, dtype=np.float32).reshape(12, 9)
    assert imresize(img, 2).dtype == np.float32


def test_x3_round_trip_shape():
    x = np.random.default_rng(1).random((99, 96))
    assert imresize(imresize(x, 1 / 3), output_shape=x.shape).shape == x.shape


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "exactly one"),
    (dict(scale=2, output_shape=(8, 8)), "exactly one"),
    (dict(scale=0), "positive"),
    (dict(scale=-0.5), "positive"),
    (dict(scale=(1, 0)), "positive"),
    (dict(output_shape=(0, 4)), "output_shape"),
    (dict(output_shape=(4,)), "output_shape"),
    (dict(scale=2, boundary="reflect"), "boundary"),
])
def test_imresize_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        imresize(np.zeros((4, 4)), **kwargs)


@pytest.mark.parametrize("img, match", [
    (np.zeros(4), "ndim"),
    (np.zeros((2, 2, 2, 2)), "ndim"),
    (np.zeros((0, 4)), "empty"),
    (np.zeros((4, 4), dtype=np.int32), "dtype"),
])
def test_imresize_rejects_bad_images(img, match):
    with pytest.raises(ValueError, match=match):
        imresize(img, 2)


@pytest.mark.parametrize("rgb, y", [
    ((0, 0, 0), 16),
    ((255, 255, 255), 235),  # 16 + 65.481 + 128.553 + 24.966 = 235
    ((255, 0, 0), 81),       # 81.481
    ((0, 255, 0), 145),      # 144.553
    ((0, 0, 255), 41),       # 40.966
    # 16 + 9307500 / 255000 = 52.5 exactly: half away gives 53, where np.round (half to
    # even) and the naive double formula (52.49999999999999) both give 52.
    ((121, 3, 40), 53),
])
def test_rgb2ycbcr_pixels(rgb, y):
    got = rgb2ycbcr(np.array(rgb, dtype=np.uint8).reshape(1, 1, 3))
    assert got.dtype == np.uint8 and got.shape == (1, 1)
    assert got[0, 0] == y


@pytest.mark.parametrize("rgb", [
    np.zeros((2, 2, 3)),                  # float
    np.zeros((2, 2), dtype=np.uint8),     # grey
    np.zeros((2, 2, 4), dtype=np.uint8),  # RGBA
])
def test_rgb2ycbcr_rejects(rgb):
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        rgb2ycbcr(rgb)


@pytest.mark.parametrize("shape, want", [
    ((100, 131), (99, 129)),
    ((99, 96), (99, 96)),
    ((100, 131, 3), (99, 129, 3)),
])
def test_modcrop_shapes(shape, want):
    img = np.arange(np.prod(shape)).reshape(shape)
    got = modcrop(img, 3)
    assert got.shape == want
    np.testing.assert_array_equal(got, img[:want[0], :want[1]])  # keeps the top-left


@pytest.mark.parametrize("img, scale", [(np.zeros((4, 4)), 0), (np.zeros((4, 4)), 1.5),
                                        (np.zeros(4), 3)])
def test_modcrop_rejects(img, scale):
    with pytest.raises(ValueError, match="modcrop"):
        modcrop(img, scale)


def test_round_half_away():
    np.testing.assert_array_equal(round_half_away([-2.5, -0.5, 0.5, 1.5, 2.5, 2.4999]),
                                  [-3, -1, 1, 2, 3, 2])
