"""Compressed DICOM that scanners and PACS exports write: JPEG Lossless (process 14, selection value
1: what dcmtk, GDCM and most archives produce) and JPEG-LS, decoded through pydicom's pylibjpeg
handler (tools/setup/requirements.txt) to the same pixels as the uncompressed file, and upscaled.
The JPEG Lossless files are written here by dcmtk's dcmcjpeg (tools/setup/debian_packages.txt);
the JPEG-LS file is one of the test files that Debian's python3-pydicom installs, as is the colour
file whose luma data_prep reads."""
import shutil
import subprocess

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1, JPEGLSLossless

from data_prep.io import dicom
from data_prep.readers import read_volume
from inference import upscale
from tests.helpers import rng_image, write_dicom


def jpeg_lossless(src, dst):
    """``src`` re-encoded by dcmcjpeg as JPEG Lossless, first-order prediction (SV1)."""
    if shutil.which("dcmcjpeg") is None:
        pytest.fail("dcmcjpeg is missing: `make setup` installs Debian's dcmtk")
    subprocess.run(["dcmcjpeg", "+e1", str(src), str(dst)], check=True, capture_output=True)
    assert pydicom.dcmread(str(dst)).file_meta.TransferSyntaxUID == JPEGLosslessSV1
    return dst


@pytest.mark.parametrize("bits", [12, 16])
def test_jpeg_lossless_decodes_to_the_uncompressed_pixels(tmp_path, bits):
    stored = rng_image((40, 36), 2 ** bits, np.uint16, seed=bits)
    plain = write_dicom(tmp_path / "plain.dcm", stored, bits_stored=bits)
    packed = jpeg_lossless(plain, tmp_path / "jpeg.dcm")
    frames = dicom.pixel_frames(dicom.read(packed), packed)
    np.testing.assert_array_equal(frames, stored[np.newaxis])


def test_jpeg_ls_decodes_to_the_uncompressed_pixels():
    packed, plain = (get_testdata_file(name) for name in ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"))
    ds = dicom.read(packed)
    assert ds.file_meta.TransferSyntaxUID == JPEGLSLossless
    np.testing.assert_array_equal(dicom.pixel_frames(ds, packed),
                                  dicom.pixel_frames(dicom.read(plain), plain))


def test_a_jpeg_lossless_series_reads_and_upscales_like_the_uncompressed_one(tmp_path, net):
    plain_dir, packed_dir = tmp_path / "plain", tmp_path / "jpeg"
    plain_dir.mkdir(), packed_dir.mkdir()
    for k in range(3):
        write_dicom(plain_dir / f"IM{k}.dcm", rng_image((30, 33), 4096, np.uint16, seed=k),
                    instance=k + 1, position=(0, 0, 2.0 * k), bits_stored=12)
        jpeg_lossless(plain_dir / f"IM{k}.dcm", packed_dir / f"IM{k}.dcm")
    (a, _), (b, _) = read_volume(plain_dir), read_volume(packed_dir)
    assert [s.image.tobytes() for s in a] == [s.image.tobytes() for s in b]
    upscale.upscale_path(plain_dir, tmp_path / "plain_x3", net)
    upscale.upscale_path(packed_dir, tmp_path / "jpeg_x3", net)
    for k in range(3):
        x, y = (pydicom.dcmread(str(tmp_path / d / f"IM{k}.dcm")) for d in ("plain_x3", "jpeg_x3"))
        assert y.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian  # written uncompressed
        np.testing.assert_array_equal(y.pixel_array, x.pixel_array)


def test_colour_dicom_is_read_as_the_luma_colour_pictures_give(tmp_path):
    """data_prep reads 8-bit colour DICOM (here Debian pydicom's RLE RGB file) as MATLAB's
    rgb2ycbcr luma, as it reads a colour PNG of the same pixels."""
    path = get_testdata_file("SC_rgb_rle.dcm")
    rgb = pydicom.dcmread(path).pixel_array
    folder = tmp_path / "png"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), rgb[..., ::-1])
    (from_dicom, _), (from_png, _) = read_volume(path), read_volume(folder)
    np.testing.assert_array_equal(from_dicom[0].image, from_png[0].image)
    assert from_dicom[0].image.dtype == np.uint8 and len(set(rgb.reshape(-1, 3)[:, 0])) > 1
