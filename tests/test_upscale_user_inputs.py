"""inference.upscale on what users' files hold besides clean images: NaN-masked volumes, DICOM folders
with objects that have no pixels, colour DICOM, and output formats too shallow for the input's
depth."""
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from inference import upscale
from tests.helpers import assert_rounds_to, bicubic, rng_image
from tests.helpers import write_dicom as write_mr_dicom


def write_dicom(path, stored, series, z):
    return write_mr_dicom(path, stored, series=series, position=(0.0, 0.0, z), instance=int(z))


def save_nifti(path, data):
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))


def test_nifti_nan_mask_is_kept_and_the_rest_sees_the_window_low(net, tmp_path):
    """A NaN-masked float volume (SPM, FSL): NaN and inf come back on the output pixels inside
    them, the window ignores them, and every other pixel is the estimate of the volume with
    those pixels at the window's low value."""
    data = np.random.RandomState(3).rand(7, 6, 2).astype(np.float32) * 100 + 50
    data[0, 0, 0], data[2, 3, 0], data[6, 5, 1] = np.nan, np.inf, -np.inf
    save_nifti(tmp_path / "in.nii.gz", data)
    info = upscale.upscale_path(tmp_path / "in.nii.gz", tmp_path / "out.nii.gz", net)
    got = nib.load(str(tmp_path / "out.nii.gz")).get_fdata()
    expected_bad = np.kron(~np.isfinite(data), np.ones((3, 3, 1), bool))
    np.testing.assert_array_equal(~np.isfinite(got), expected_bad)
    np.testing.assert_array_equal(got[expected_bad], np.kron(data, np.ones((3, 3, 1)))[expected_bad])
    finite = data[np.isfinite(data)]
    lo = info["window"][0]
    assert finite.min() <= lo and info["window"][1] <= finite.max()
    for k in range(2):
        filled = np.where(np.isfinite(data[..., k]), data[..., k], lo)
        np.testing.assert_allclose(got[..., k][~expected_bad[..., k]],
                                   bicubic(filled)[~expected_bad[..., k]], atol=1e-3)


def test_nifti_without_a_finite_value_is_one_clear_error(net, tmp_path):
    save_nifti(tmp_path / "in.nii.gz", np.full((6, 6, 2), np.nan, np.float32))
    with pytest.raises(upscale.DataError, match="no finite values"):
        upscale.upscale_path(tmp_path / "in.nii.gz", tmp_path / "out.nii.gz", net)
    assert not (tmp_path / "out.nii.gz").exists()


def test_dicom_folder_skips_objects_without_pixels_with_a_warning(net, tmp_path, capsys):
    """An exported study holds a structured report or a DICOMDIR beside the images."""
    series = generate_uid()
    src, dst = tmp_path / "series", tmp_path / "sr"
    src.mkdir()
    for k in range(2):
        write_dicom(src / f"IM{k}.dcm", rng_image((10, 12), 1000, np.uint16, seed=k), series, z=3.0 * k)
    report = pydicom.dcmread(str(src / "IM0.dcm"))
    del report.PixelData
    report.SeriesInstanceUID = generate_uid()  # another series: it must not count as one
    report.save_as(str(src / "REPORT.dcm"))
    assert upscale.upscale_path(src, dst, net)["slices"] == 2
    assert sorted(p.name for p in dst.iterdir()) == ["IM0.dcm", "IM1.dcm"]
    assert "REPORT.dcm: not a DICOM image (no pixel data); skipped" in capsys.readouterr().err
    for k in range(2):
        (src / f"IM{k}.dcm").unlink()
    with pytest.raises(upscale.DataError, match="no DICOM images"):
        upscale.upscale_path(src, tmp_path / "none", net)
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("dtype, suffix, fits", [(np.uint8, ".jpg", ".png or .tif or .bmp"),
                                                  (np.uint16, ".jpg", ".png or .tif"),
                                                  (np.uint16, ".bmp", ".png or .tif"),
                                                  (np.float32, ".png", ".tif")])
def test_an_output_format_too_shallow_for_the_input_is_refused_before_the_work(
        tmp_path, dtype, suffix, fits):
    """OpenCV would write a 16-bit or float image to these as 8 bits without a word; JPEG, lossy,
    is read but not written."""
    src = tmp_path / ("in.tif" if dtype == np.float32 else "in.png")
    cv2.imwrite(str(src), rng_image((12, 10), 4000, dtype))

    def net(_):
        raise AssertionError("the net ran: the refusal must come first")
    with pytest.raises(upscale.DataError, match=f"cannot hold {np.dtype(dtype).name} pixels.*write {fits}"):
        upscale.upscale_path(src, tmp_path / f"out{suffix}", net)
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


def test_an_output_format_that_holds_the_depth_is_written(net, tmp_path):
    img = rng_image((12, 10), 4000, np.uint16)
    cv2.imwrite(str(tmp_path / "in.png"), img)
    upscale.upscale_path(tmp_path / "in.png", tmp_path / "out.tif", net)
    assert cv2.imread(str(tmp_path / "out.tif"), cv2.IMREAD_UNCHANGED).dtype == np.uint16


# ------------------------------------------------------------------------ colour DICOM

def write_rgb_dicom(path, rgb, photometric="RGB", samples=3):
    """An uncompressed 8-bit secondary capture holding ``rgb`` (H, W, 3) as stored."""
    ds = pydicom.dcmread(str(write_mr_dicom(path, np.zeros(rgb.shape[:2]), position=(0, 0, 0))))
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, photometric
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = np.ascontiguousarray(rgb if samples == 3 else rgb[..., 0], np.uint8).tobytes()
    ds.save_as(str(path), write_like_original=False)
    return path


def test_an_rgb_dicom_upscales_as_the_same_png(net, tmp_path):
    rgb = rng_image((14, 11, 3), 256, np.uint8)
    write_rgb_dicom(tmp_path / "us.dcm", rgb)
    cv2.imwrite(str(tmp_path / "us.png"), rgb[..., ::-1])
    upscale.upscale_path(tmp_path / "us.dcm", tmp_path / "us_x3.dcm", net)
    upscale.upscale_path(tmp_path / "us.png", tmp_path / "us_x3.png", net)
    out = pydicom.dcmread(str(tmp_path / "us_x3.dcm"))
    assert (out.PhotometricInterpretation, out.SamplesPerPixel, out.Rows, out.Columns) == ("RGB", 3, 42, 33)
    np.testing.assert_array_equal(out.pixel_array, cv2.imread(str(tmp_path / "us_x3.png"))[..., ::-1])


def test_ybr_jpeg_dicom_is_read_as_rgb_and_written_as_rgb(net, tmp_path):
    """Debian pydicom's test files: the same picture as JPEG baseline in YBR_FULL and as RLE RGB."""
    ybr, rgb = (get_testdata_file(n) for n in ("SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle.dcm"))
    assert pydicom.dcmread(ybr).PhotometricInterpretation == "YBR_FULL"
    expected = pydicom.dcmread(rgb).pixel_array.astype(float)
    upscale.upscale_path(Path(ybr), tmp_path / "x3.dcm", net)
    out = pydicom.dcmread(str(tmp_path / "x3.dcm"))
    assert out.PhotometricInterpretation == "RGB" and out.pixel_array.shape == (300, 300, 3)
    # the identity net: x3 of the lossy JPEG's RGB, close to x3 of the lossless RGB
    assert np.abs(out.pixel_array[1::3, 1::3] - expected).mean() < 4


def test_a_palette_colour_dicom_is_one_clear_error(net, tmp_path):
    write_rgb_dicom(tmp_path / "pal.dcm", rng_image((14, 11, 3), 256, np.uint8), "PALETTE COLOR", 1)
    with pytest.raises(upscale.DataError, match="colour DICOM \\(PALETTE COLOR\\) is not grey"):
        upscale.upscale_path(tmp_path / "pal.dcm", tmp_path / "x3.dcm", net)
    assert not (tmp_path / "x3.dcm").exists()


# ------------------------------------------------------------------------ multi-page TIFF

def test_a_multi_page_tiff_is_upscaled_page_by_page_with_one_window(net, tmp_path):
    pages = [rng_image((10, 12), 4000, np.uint16, seed=k) + 1000 * k for k in range(3)]
    assert cv2.imwritemulti(str(tmp_path / "stack.tif"), pages)
    info = upscale.upscale_path(tmp_path / "stack.tif", tmp_path / "x3.tif", net)
    assert info["slices"] == 3
    assert info["window"] == [float(min(p.min() for p in pages)), float(max(p.max() for p in pages))]
    ok, out = cv2.imreadmulti(str(tmp_path / "x3.tif"), flags=cv2.IMREAD_UNCHANGED)
    assert ok and len(out) == 3 and all(o.dtype == np.uint16 and o.shape == (30, 36) for o in out)
    for page, got in zip(pages, out):
        assert_rounds_to(got, bicubic(page), lo=0, hi=65535)


def test_a_multi_page_tiff_to_another_format_is_refused_before_the_work(tmp_path):
    assert cv2.imwritemulti(str(tmp_path / "stack.tif"), [rng_image((10, 12), 4000, np.uint16)] * 2)

    def net(_):
        raise AssertionError("the net ran: the refusal must come first")
    with pytest.raises(upscale.DataError, match="several pages need a TIFF"):
        upscale.upscale_path(tmp_path / "stack.tif", tmp_path / "x3.png", net)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.tif"]


def test_a_folder_of_pictures_is_one_line_not_a_warning_per_picture(net, tmp_path, capsys):
    """A folder is one DICOM series; pictures go one --in at a time (said before any is read)."""
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), rng_image((20, 20), 256, np.uint8, seed=i))
    with pytest.raises(upscale.DataError, match=r"a folder of pictures \(0.png, ...\) is not a DICOM series"):
        upscale.upscale_path(tmp_path, tmp_path.parent / "out", net)
    assert capsys.readouterr().err == ""
