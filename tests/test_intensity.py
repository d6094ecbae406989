"""The intensity rules (data_prep.intensity): each rule against numpy, rounding half away from zero,
the auto rule, and the inputs every rule refuses."""
import numpy as np
import pytest

from core.errors import DataError
from data_prep import intensity
from tests.helpers import expected_window


def test_mr_rule_matches_numpy():
    vol = np.random.default_rng(4).gamma(2.0, 300.0, (3, 16, 16))
    out, params = intensity.convert(vol, "mr")
    lo, hi = np.percentile(vol, [0.5, 99.5])
    np.testing.assert_array_equal(out, expected_window(vol, lo, hi))
    assert params["low"] == lo and params["high"] == hi
    assert out.min() == 0 and out.max() == 255


def test_rounding_is_half_away_from_zero():
    # ct window [0, 510]: y = x / 2 exactly, so odd x land on .5
    out = intensity.to_uint8(np.array([1.0, 3.0, 5.0, 7.0]), "ct", center=255, width=510)
    assert out.tolist() == [1, 2, 3, 4]  # not banker's [0, 2, 2, 4]


def test_bits_and_none_rules():
    vol = np.array([0, 2048, 4095], np.uint16)
    assert intensity.to_uint8(vol, "bits", bits_stored=12).tolist() == [0, 128, 255]
    assert intensity.to_uint8(np.array([0, 7, 255], np.int16), "none").tolist() == [0, 7, 255]
    with pytest.raises(DataError, match="outside 0..255"):
        intensity.to_uint8(np.array([0, 256]), "none", source="v.nii")
    with pytest.raises(DataError, match="non-integer"):
        intensity.to_uint8(np.array([0.0, 1.5]), "none")


def test_auto_rule_resolution():
    assert intensity.resolve_rule("auto", np.uint8, "CT") == "none"
    assert intensity.resolve_rule("auto", np.int16, "CT") == "ct"
    assert intensity.resolve_rule("auto", np.uint16, "MG") == "bits"
    assert intensity.resolve_rule("auto", np.float32, None) == "mr"
    assert intensity.RULES == ("auto", "mr", "ct", "bits", "none")
    with pytest.raises(DataError, match="unknown intensity rule"):
        intensity.to_uint8(np.arange(4), "gamma")


@pytest.mark.parametrize("rule", ["mr", "none", "bits"])
def test_constant_image_rejected(rule):
    with pytest.raises(DataError, match="flat.png: constant image"):
        intensity.to_uint8(np.full((4, 4), 7, np.uint8), rule, source="flat.png")


def test_nan_and_inf_are_left_out_of_the_window_and_become_black():
    finite = np.linspace(10.0, 400.0, 1000)
    for bad in (np.nan, np.inf, -np.inf):
        masked = np.concatenate([finite, np.full(300, bad)])
        out, info = intensity.convert(masked, "mr", source="v.nii")
        expected, expected_info = intensity.convert(finite, "mr")
        np.testing.assert_array_equal(out[:1000], expected)
        assert (out[1000:] == 0).all() and info["nonfinite_to_black"] == 300
        assert (info["low"], info["high"]) == (expected_info["low"], expected_info["high"])
    with pytest.raises(DataError, match="v.nii: image has no finite values"):
        intensity.to_uint8(np.full(5, np.nan), "mr", source="v.nii")
