"""NIfTI pairs (.hdr + .img, data_prep/io/nifti_pair.py): read by data_prep and upscaled by
inference.upscale exactly as the same image in a single .nii file; both files written, atomically;
Analyze 7.5 headers refused with one line."""
import nibabel as nib
import numpy as np
import pytest

from core.errors import DataError
from data_prep.io import format_of
from data_prep.readers import read_volume
from inference import upscale
from tests.helpers import rng_image


def affine():
    a = np.array([[0.0, -0.9, 0.1, 20.0], [0.8, 0.0, 0.0, -7.0], [0.0, 0.2, 3.0, 4.0], [0, 0, 0, 1]])
    return a


def save_both(folder, data, scaling=None):
    """The same image as ``single.nii`` and as ``pair.hdr`` + ``pair.img``."""
    for cls, name in ((nib.Nifti1Image, "single.nii"), (nib.Nifti1Pair, "pair.hdr")):
        img = cls(data, affine())
        img.set_qform(affine(), code=1)
        if scaling is not None:
            img.header.set_slope_inter(*scaling)
        nib.save(img, str(folder / name))
    return folder / "single.nii", folder / "pair.hdr"


@pytest.mark.parametrize("dtype, scaling", [(np.float32, None), (np.int16, (0.5, 10.0))])
@pytest.mark.parametrize("named_by", [".hdr", ".img"])
def test_a_pair_upscales_as_the_same_single_file(net, tmp_path, dtype, scaling, named_by):
    data = rng_image((9, 8, 3), 3000, dtype) - (500 if dtype == np.int16 else 0)
    single, pair = save_both(tmp_path, data, scaling)
    src = pair.with_suffix(named_by)
    assert format_of(src).name == "nifti-pair" and format_of(single).name == "nifti"
    upscale.upscale_path(single, tmp_path / "single_x3.nii", net)
    upscale.upscale_path(src, tmp_path / f"pair_x3{named_by}", net)
    assert (tmp_path / "pair_x3.hdr").is_file() and (tmp_path / "pair_x3.img").is_file()
    a, b = nib.load(str(tmp_path / "single_x3.nii")), nib.load(str(tmp_path / "pair_x3.hdr"))
    assert isinstance(b, nib.Nifti1Pair) and b.shape == (27, 24, 3)
    np.testing.assert_array_equal(np.asanyarray(b.dataobj), np.asanyarray(a.dataobj))
    np.testing.assert_array_equal(b.affine, a.affine)
    np.testing.assert_array_equal(b.get_qform(), a.get_qform())
    assert b.header.get_zooms() == a.header.get_zooms() and b.get_data_dtype() == dtype
    assert (b.dataobj.slope, b.dataobj.inter) == (a.dataobj.slope, a.dataobj.inter)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["single.nii", "pair.hdr", "pair.img", "single_x3.nii", "pair_x3.hdr", "pair_x3.img"])


def test_data_prep_reads_a_pair_as_the_single_file(tmp_path):
    single, pair = save_both(tmp_path, rng_image((40, 36, 5), 3000, np.float32))
    (a, info_a), (b, info_b) = read_volume(single), read_volume(pair)
    assert [s.image.tobytes() for s in a] == [s.image.tobytes() for s in b]
    assert info_b["format"] == "nifti-pair" and info_a["pixel_spacing"] == info_b["pixel_spacing"]


def test_an_analyze_header_is_one_clear_error(net, tmp_path):
    nib.save(nib.AnalyzeImage(rng_image((9, 8, 2), 3000, np.int16), affine()), str(tmp_path / "a.hdr"))
    for reader in (lambda: read_volume(tmp_path / "a.hdr"),
                   lambda: upscale.upscale_path(tmp_path / "a.hdr", tmp_path / "b.hdr", net)):
        with pytest.raises(DataError, match="Analyze 7.5 header .*convert it to NIfTI"):
            reader()
    assert not (tmp_path / "b.hdr").exists() and not (tmp_path / "b.img").exists()


def test_writing_over_the_input_s_own_voxel_file_is_refused(net, tmp_path):
    _, pair = save_both(tmp_path, rng_image((9, 8, 2), 3000, np.float32))
    with pytest.raises(DataError, match="would be written with"):
        upscale.upscale_path(pair, tmp_path / "pair.img", net, force=True)
