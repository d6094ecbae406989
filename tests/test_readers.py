"""Readers, on tiny synthetic DICOM / NIfTI / PNG / TIFF files (written by tests/helpers.py; the
intensity rules alone are in tests/test_intensity.py)."""
import numpy as np
import pytest

from data_prep import matlab  # noqa: F401  the colour path's luma: a broken module fails here
from core.errors import DataError
from data_prep.readers import Slice, read_volume
from tests.helpers import (SERIES_A, SERIES_B, expected_window, ramp, write_dicom, write_nifti,
                           write_png)


# ----------------------------------------------------------------------- DICOM

@pytest.mark.parametrize("orientation, axis", [((1, 0, 0, 0, 1, 0), 2),    # axial: normal +z
                                               ((0, 1, 0, 0, 0, -1), 0)])  # sagittal: normal -x
def test_dicom_series_sorted_by_position_on_slice_normal(tmp_path, orientation, axis):
    normal = np.cross(orientation[:3], orientation[3:])
    # (file, InstanceNumber, distance along the normal): names and instance
    # numbers deliberately disagree with the geometric order c < a < b.
    layout = [("a", 3, 2.5), ("b", 1, 10.0), ("c", 2, -5.0)]
    for k, (name, inst, dist) in enumerate(layout):
        pos = np.zeros(3)
        pos[axis] = dist * normal[axis]
        write_dicom(tmp_path / f"{name}.dcm", ramp(lo=100 * k + 1, hi=3000 + 100 * k),
                    instance=inst, position=pos, orientation=orientation)
    slices, info = read_volume(tmp_path, rule="bits")
    assert [s.name for s in slices] == ["c", "a", "b"]
    assert [s.index for s in slices] == [0, 1, 2]
    assert slices[0].source.endswith("c.dcm")
    assert info["sort_key"] == "ImagePositionPatient"
    assert info["slice_spacing"] == pytest.approx(7.5)
    assert info["pixel_spacing"] == [0.5, 0.75]
    assert info["format"] == "dicom" and info["n_slices"] == 3 and info["shape"] == (40, 40)
    assert all(isinstance(s, Slice) and s.image.dtype == np.uint8 and s.image.shape == (40, 40)
               for s in slices)
    # c was written third (k=2): its ramp starts at 201
    assert slices[0].image[0, 0] == expected_window(201, 0, 65535)


def test_dicom_sort_falls_back_to_instance_number_then_filename(tmp_path):
    for name, inst in [("s1", 3), ("s2", 1), ("s10", 2)]:
        write_dicom(tmp_path / f"{name}.dcm", ramp(), instance=inst)
    slices, info = read_volume(tmp_path)
    assert [s.name for s in slices] == ["s2", "s10", "s1"]
    assert info["sort_key"] == "InstanceNumber"
    for name in ["s1", "s2", "s10"]:
        write_dicom(tmp_path / f"{name}.dcm", ramp())  # no InstanceNumber, no position
    slices, info = read_volume(tmp_path)
    assert [s.name for s in slices] == ["s1", "s2", "s10"]  # natural order
    assert info["sort_key"] == "filename"


def test_dicom_rescale_slope_intercept_applied(tmp_path):
    stored = ramp(lo=0, hi=2000)
    path = write_dicom(tmp_path / "ct.dcm", stored, modality="CT", slope=2, intercept=-1024)
    slices, info = read_volume(path)  # auto: Modality CT -> "ct", default window 40/400
    hu = stored * 2.0 - 1024
    assert info["rule"] == "ct"
    assert info["rule_params"] == {"center": 40.0, "width": 400.0, "low": -160.0, "high": 240.0}
    np.testing.assert_array_equal(slices[0].image, expected_window(hu, -160, 240))
    # "bits" on the same file scales the rescaled values, not the stored ones
    slices, info = read_volume(path, rule="bits", bits_stored=12)
    np.testing.assert_array_equal(slices[0].image, expected_window(hu, 0, 4095))


def test_dicom_monochrome1_is_inverted(tmp_path):
    img = np.full((40, 40), 100, np.uint16)
    img[:10, :10] = 4000  # stored high = displayed dark in MONOCHROME1
    mono1 = read_volume(write_dicom(tmp_path / "m1.dcm", img, photometric="MONOCHROME1"),
                        rule="bits", bits_stored=12)[0][0].image
    mono2 = read_volume(write_dicom(tmp_path / "m2.dcm", img),
                        rule="bits", bits_stored=12)[0][0].image
    assert mono2[0, 0] > mono2[-1, -1]
    assert mono1[0, 0] < mono1[-1, -1]  # the square is now dark
    inverted = np.where(img == 4000, 100, 4000)  # max + min - x
    np.testing.assert_array_equal(mono1, expected_window(inverted, 0, 4095))


def test_dicom_multi_series_folder_is_an_error_unless_series_is_given(tmp_path):
    for k in range(3):
        write_dicom(tmp_path / f"a{k}.dcm", ramp(), instance=k, series=SERIES_A)
    for k in range(2):
        write_dicom(tmp_path / f"b{k}.dcm", ramp(), instance=k, series=SERIES_B)
    with pytest.raises(DataError) as err:
        read_volume(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and SERIES_A in msg and SERIES_B in msg and "a folder of its own" in msg and "series=" not in msg
    assert "\n" not in msg
    slices, info = read_volume(tmp_path, series=SERIES_B)
    assert [s.name for s in slices] == ["b0", "b1"] and info["series_uid"] == SERIES_B


def test_dicom_multiframe_gives_one_slice_per_frame(tmp_path):
    frames = np.stack([ramp(lo=10 * k + 1) for k in range(4)])
    slices, info = read_volume(write_dicom(tmp_path / "mf.dcm", frames))
    assert [s.name for s in slices] == [f"mf_f{k:04d}" for k in range(4)]
    assert info["n_slices"] == 4 and info["sort_key"] == "frame order"


def test_dicom_without_preamble_or_extension(tmp_path):
    path = write_dicom(tmp_path / "IM0001", ramp(), preamble=False)
    assert open(path, "rb").read(132)[128:] != b"DICM"
    slices, info = read_volume(path)
    assert info["format"] == "dicom" and slices[0].name == "IM0001"


def test_dicom_8bit_uses_none_rule_and_uid_names_keep_dots(tmp_path):
    path = tmp_path / "1.2.3.4"
    write_dicom(path, ramp(lo=0, hi=255), bits_stored=8)  # 16-bit container, 8-bit values
    slices, info = read_volume(path, rule="none")
    np.testing.assert_array_equal(slices[0].image, ramp(lo=0, hi=255))
    assert slices[0].name == "1.2.3.4"


# ----------------------------------------------------------------------- NIfTI

@pytest.mark.parametrize("axis, count, shape", [(0, 4, (6, 5)), (1, 5, (6, 4)), (2, 6, (5, 4))])
def test_nifti_slices_along_each_axis(tmp_path, axis, count, shape):
    data = np.random.default_rng(0).integers(0, 256, (4, 5, 6), dtype=np.uint8)
    slices, info = read_volume(write_nifti(tmp_path / "vol.nii.gz", data), axis=axis)
    assert len(slices) == count and info["n_slices"] == count
    assert all(s.image.shape == shape and s.image.dtype == np.uint8 for s in slices)
    assert slices[3].name == f"vol_{'xyz'[axis]}0003"
    assert info["rule"] == "none"  # uint8 passes through
    np.testing.assert_array_equal(slices[3].image, np.rot90(np.take(data, 3, axis=axis)))


def test_nifti_is_reoriented_to_ras_and_spacing_reported(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, (4, 5, 6), dtype=np.uint8)
    lps = np.diag([-2.0, -3.0, 4.0, 1.0])  # x and y flipped, voxel 2 x 3 x 4 mm
    slices, info = read_volume(write_nifti(tmp_path / "lps.nii", data, lps), axis=2)
    ras = data[::-1, ::-1, :]
    np.testing.assert_array_equal(slices[1].image, np.rot90(ras[:, :, 1]))
    assert info["pixel_spacing"] == [3.0, 2.0] and info["slice_spacing"] == 4.0


def test_nifti_float_volume_uses_mr_percentiles_over_whole_volume(tmp_path):
    data = np.random.default_rng(2).normal(500, 100, (8, 9, 10)).astype(np.float32)
    data[0, 0, 0] = 1e6  # outlier: clipped by the percentile window
    slices, info = read_volume(write_nifti(tmp_path / "f.nii.gz", data))
    lo, hi = np.percentile(data, [0.5, 99.5])
    assert info["rule"] == "mr"
    assert (info["rule_params"]["low"], info["rule_params"]["high"]) == pytest.approx((lo, hi))
    for k in (0, 9):
        expected = expected_window(np.rot90(data[:, :, k]), lo, hi)
        np.testing.assert_array_equal(slices[k].image, expected)


def test_nifti_4d(tmp_path):
    data = np.random.default_rng(3).integers(0, 256, (4, 5, 6, 1), dtype=np.uint8)
    assert len(read_volume(write_nifti(tmp_path / "one.nii", data))[0]) == 6
    path = write_nifti(tmp_path / "two.nii", np.concatenate([data, data], axis=3))
    with pytest.raises(DataError, match="two.nii"):
        read_volume(path)


def test_nifti_nan_voxels_are_black_and_an_all_nan_file_is_refused_by_name(tmp_path):
    data = np.random.RandomState(0).rand(4, 5, 6).astype(np.float32) + 1
    masked = data.copy()
    masked[1, 2, 3] = np.nan
    (plain, _), (slices, info) = (read_volume(write_nifti(tmp_path / f"{n}.nii", d))
                                  for n, d in (("plain", data), ("nan", masked)))
    assert info["rule_params"]["nonfinite_to_black"] == 1  # the mapping: tests/test_intensity.py
    assert len(slices) == len(plain) and slices[0].image.shape == plain[0].image.shape
    with pytest.raises(DataError, match=r"allnan\.nii: image has no finite values"):
        read_volume(write_nifti(tmp_path / "allnan.nii", np.full((4, 5, 6), np.nan, np.float32)))


# ---------------------------------------------------------------------- images

def test_png_8bit_grey_passes_through(tmp_path):
    img = ramp(lo=0, hi=255).astype(np.uint8)
    slices, info = read_volume(write_png(tmp_path / "g.png", img))
    np.testing.assert_array_equal(slices[0].image, img)
    assert info["format"] == "image" and info["rule"] == "none"
    assert info["intensity_scope"] == "image" and slices[0].name == "g"


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16bit_image_uses_mr_rule(tmp_path, ext):
    img = ramp(lo=0, hi=60000)
    slices, info = read_volume(write_png(tmp_path / f"h.{ext}", img))
    lo, hi = np.percentile(img, [0.5, 99.5])
    np.testing.assert_array_equal(slices[0].image, expected_window(img, lo, hi))
    slices, info = read_volume(tmp_path / f"h.{ext}", rule="bits")  # dtype depth: 16
    assert info["rule_params"]["h"]["bits_stored"] == 16
    np.testing.assert_array_equal(slices[0].image, expected_window(img, 0, 65535))


def test_rgb_png_becomes_matlab_luma(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:, :4] = (255, 0, 0)  # red | blue: a BGR/RGB mix-up would swap them
    rgb[:, 4:] = (0, 0, 255)
    path = write_png(tmp_path / "c.png", rgb[..., ::-1])  # cv2 writes BGR
    image = read_volume(path)[0][0].image
    red, blue = round(16 + 65.481), round(16 + 24.966)  # Y = 16 + (65.481 R + ... ) / 255
    assert (image[:, :4] == red).all() and (image[:, 4:] == blue).all()


def test_image_folder_natural_order_and_per_image_rule(tmp_path):
    write_png(tmp_path / "img10.png", ramp(lo=0, hi=200).astype(np.uint8))
    write_png(tmp_path / "img2.png", ramp((20, 30), lo=0, hi=60000))
    slices, info = read_volume(tmp_path)
    assert [s.name for s in slices] == ["img2", "img10"]
    assert info["rule"] == "mixed" and info["shape"] is None
    assert set(info["rule_params"]) == {"img2", "img10"}


# ------------------------------------------------------------------- bad input

def test_text_file_named_dcm(tmp_path):
    path = tmp_path / "x.dcm"
    path.write_text("hello\nthis is not DICOM\n")
    with pytest.raises(DataError) as err:
        read_volume(path)
    assert "x.dcm" in str(err.value) and "\n" not in str(err.value)


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no files"):
        read_volume(tmp_path)


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="nothere"):
        read_volume(tmp_path / "nothere")


def test_npy_is_not_a_supported_format(tmp_path):
    path = tmp_path / "line.npy"
    np.save(path, np.arange(10))
    with pytest.raises(DataError, match="line.npy: unsupported file format"):
        read_volume(path)


def test_folder_bad_file_skipped_with_warning(tmp_path, capsys):
    write_png(tmp_path / "a.png", ramp(lo=0, hi=255).astype(np.uint8))
    write_png(tmp_path / "b.png", ramp(lo=0, hi=200).astype(np.uint8))
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    slices, info = read_volume(tmp_path)
    err = capsys.readouterr().err
    assert [s.name for s in slices] == ["a", "b"]
    assert err.startswith("warning: ") and "bad.png" in err and err.count("\n") == 1
    assert info["skipped"] == [str(tmp_path / "bad.png")]


def test_dicom_folder_bad_files_skipped_with_warning(tmp_path, capsys):
    for k in (1, 2):
        write_dicom(tmp_path / f"s{k}.dcm", ramp(), instance=k)
    (tmp_path / "x.dcm").write_text("not DICOM")
    (tmp_path / "notes.txt").write_text("scan notes")
    slices, _ = read_volume(tmp_path)
    err = capsys.readouterr().err
    assert [s.name for s in slices] == ["s1", "s2"]
    assert "x.dcm" in err and "notes.txt" in err and err.count("warning: ") == 2


def test_folder_with_only_bad_files(tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"nope")
    write_png(tmp_path / "flat.png", np.zeros((8, 8), np.uint8))  # constant: skipped too
    with pytest.raises(DataError, match="no usable images|no readable"):
        read_volume(tmp_path)
    err = capsys.readouterr().err
    assert "bad.png" in err and "flat.png" in err


def test_folder_mixing_dicom_and_images(tmp_path):
    write_dicom(tmp_path / "s1.dcm", ramp())
    write_png(tmp_path / "a.png", ramp(lo=0, hi=255).astype(np.uint8))
    with pytest.raises(DataError, match="both DICOM and 2-D image"):
        read_volume(tmp_path)


def test_a_multi_page_tiff_gives_its_first_page_and_says_so(tmp_path, capsys):
    import cv2
    pages = [np.full((40, 40), 10 * (k + 1), np.uint8) for k in range(3)]
    pages[0][:20] = 200
    assert cv2.imwritemulti(str(tmp_path / "stack.tif"), pages)
    slices, _ = read_volume(tmp_path / "stack.tif")
    assert len(slices) == 1 and (slices[0].image == pages[0]).all()
    assert "stack.tif: a TIFF of 3 pages: only the first is read" in capsys.readouterr().err
