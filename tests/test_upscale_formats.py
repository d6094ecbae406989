"""inference.upscale: x3 super-resolution of PNG, DICOM and NIfTI files, written back in their format
(the command line and the limits are in tests/test_upscale_cli.py).

Most tests use an identity net (weights chosen so the net returns its input): the output must then
be the MATLAB bicubic x3 of the input in its own intensity scale, rounded, whatever the window.
"""
import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from inference import upscale
from tests.helpers import assert_rounds_to, bicubic, rng_image
from tests.helpers import write_dicom as write_mr_dicom


# ---------------------------------------------------------------------------------- core

def test_identity_net_is_identity(net):
    x = np.random.RandomState(1).rand(20, 17) * 1.4 - 0.2  # bicubic overshoot: both signs
    np.testing.assert_allclose(net(x), x, atol=1e-6)


def test_upscaled_affine_keeps_the_first_voxel_centre():
    affine = np.array([[0.0, -2.0, 0.5, 10.0], [1.5, 0.0, 0.0, -4.0],
                       [0.0, 0.3, 3.0, 7.0], [0, 0, 0, 1]])
    new = upscale.upscaled_affine(affine, (0, 1), 3)
    np.testing.assert_allclose(new[:3, :2], affine[:3, :2] / 3)
    np.testing.assert_allclose(new[:, 2], affine[:, 2])
    for k in (0, 3):
        np.testing.assert_allclose(new @ [1, 1, k, 1], affine @ [0, 0, k, 1])
    # The image keeps its extent: new index -0.5 is the old edge, old index -0.5.
    np.testing.assert_allclose(new @ [-0.5, -0.5, 0, 1], affine @ [-0.5, -0.5, 0, 1])


# ---------------------------------------------------------------------------------- PNG

def test_png_8bit_grey_equals_bicubic_with_identity_net(net, tmp_path):
    img = rng_image((10, 13), 256, np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), img)
    info = upscale.upscale_path(tmp_path / "in.png", tmp_path / "out.png", net)
    out = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint8 and out.shape == (30, 39)
    assert info["window"] == [0.0, 255.0] and info["slices"] == 1
    assert_rounds_to(out, bicubic(img), lo=0, hi=255)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "out.png"]  # no temp left


def test_png_16bit_uses_min_max_window(net, tmp_path):
    img = rng_image((9, 8), 4000, np.uint16) + 300
    cv2.imwrite(str(tmp_path / "in.png"), img)
    info = upscale.upscale_path(tmp_path / "in.png", tmp_path / "out.png", net)
    out = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape == (27, 24)
    assert info["window"] == [float(img.min()), float(img.max())]
    assert_rounds_to(out, bicubic(img), lo=0, hi=65535)


def test_png_rgb_keeps_colour(net, tmp_path):
    rgb = rng_image((8, 11, 3), 256, np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), rgb[..., ::-1])
    upscale.upscale_path(tmp_path / "in.png", tmp_path / "out.png", net)
    out = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert out.shape == (24, 33, 3)
    # Identity on Y, bicubic on Cb/Cr: the conversions are linear, so RGB is bicubic per channel.
    assert_rounds_to(out, bicubic(rgb), lo=0, hi=255)


# -------------------------------------------------------------------------------- DICOM

def write_dicom(path, stored, series_uid, z=0.0, photometric="MONOCHROME2", bits_stored=12):
    """An uncompressed 16-bit MR DICOM file with RescaleSlope 2, RescaleIntercept -100, and a few
    tags the upscaler must keep (or drop: SmallestImagePixelValue describes the old pixels)."""
    write_mr_dicom(path, stored, position=(-10.0, -20.0, z), series=series_uid,
                   photometric=photometric, slope=2, intercept=-100, bits_stored=bits_stored)
    ds = pydicom.dcmread(str(path))
    ds.StudyInstanceUID, ds.PatientName, ds.SeriesDescription = "1.2.3.4", "Test^Patient", "t2 axial"
    ds.add_new(0x00280106, "US", int(stored.min()))  # SmallestImagePixelValue, unsigned data
    ds.save_as(str(path), write_like_original=False)
    return ds


def rescaled(ds):
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_dicom_series_round_trip(net, tmp_path):
    series = generate_uid()
    src, dst = tmp_path / "series", tmp_path / "sr"
    src.mkdir()
    for k in range(3):
        stored = rng_image((10, 12), 1000, np.uint16, seed=k)
        write_dicom(src / f"IM{k}.dcm", stored, series, z=3.0 * k)
    info = upscale.upscale_path(src, dst, net)
    assert info["slices"] == 3 and info["format"] == "folder"
    assert sorted(p.name for p in dst.iterdir()) == ["IM0.dcm", "IM1.dcm", "IM2.dcm"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series", "sr"]  # no temp folder left
    ins = [pydicom.dcmread(str(src / f"IM{k}.dcm")) for k in range(3)]
    outs = [pydicom.dcmread(str(dst / f"IM{k}.dcm")) for k in range(3)]
    uids = {ds.SOPInstanceUID for ds in ins + outs}
    assert len(uids) == 6  # new and distinct
    assert len({ds.SeriesInstanceUID for ds in outs}) == 1
    assert outs[0].SeriesInstanceUID != series
    for old, new in zip(ins, outs):
        assert (new.Rows, new.Columns) == (30, 36)
        assert new.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
        for tag in ("BitsAllocated", "BitsStored", "PixelRepresentation", "RescaleSlope",
                    "RescaleIntercept", "PatientName", "StudyInstanceUID"):
            assert new[tag].value == old[tag].value, tag
        assert new.SeriesDescription == "t2 axial SR x3"
        assert "SmallestImagePixelValue" not in new  # described the old pixels
        np.testing.assert_allclose([float(v) for v in new.PixelSpacing], [0.5 / 3, 0.75 / 3])
        # New pixel (1, 1) lies on old pixel (0, 0)'s centre (imresize's convention).
        ipp = np.array(new.ImagePositionPatient, float)
        world = ipp + np.array([1, 0, 0]) * float(new.PixelSpacing[1]) \
            + np.array([0, 1, 0]) * float(new.PixelSpacing[0])
        np.testing.assert_allclose(world, np.array(old.ImagePositionPatient, float), atol=1e-9)
        assert new.pixel_array.dtype == np.uint16
        # Overshoot below stored 0 (or above 12 bits) is clipped to what BitsStored holds.
        assert_rounds_to(rescaled(new), bicubic(rescaled(old)), unit=2.0, lo=-100,
                         hi=2 * 4095 - 100)


def test_dicom_monochrome1_is_kept_and_inverted_for_the_net(tmp_path):
    stored = np.zeros((12, 12), np.uint16)
    stored[4:8, 4:8] = 1000  # MONOCHROME1: mostly white (low values), a dark square
    write_dicom(tmp_path / "in.dcm", stored, generate_uid(), photometric="MONOCHROME1")
    seen = []

    def recording_identity(x):
        seen.append(x)
        return x
    upscale.upscale_path(tmp_path / "in.dcm", tmp_path / "out.dcm", recording_identity)
    out = pydicom.dcmread(str(tmp_path / "out.dcm"))
    assert out.PhotometricInterpretation == "MONOCHROME1"
    assert np.median(seen[0]) > 0.9  # the net saw white as high values
    ins = pydicom.dcmread(str(tmp_path / "in.dcm"))
    assert_rounds_to(rescaled(out), bicubic(rescaled(ins)), unit=2.0, lo=-100, hi=2 * 4095 - 100)


def test_dicom_compressed_input_gives_uncompressed_output(net, tmp_path):
    ds = write_dicom(tmp_path / "plain.dcm", rng_image((9, 7), 4000, np.uint16), generate_uid())
    ds.compress(RLELossless)
    ds.save_as(str(tmp_path / "rle.dcm"))
    upscale.upscale_path(tmp_path / "rle.dcm", tmp_path / "out.dcm", net)
    out = pydicom.dcmread(str(tmp_path / "out.dcm"))
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out["PixelData"].VR == "OW" and not out["PixelData"].is_undefined_length
    assert out.pixel_array.shape == (27, 21)
    assert_rounds_to(rescaled(out), bicubic(rescaled(ds)), unit=2.0, lo=-100, hi=2 * 4095 - 100)


def test_cli_force_replaces_existing_dicom_folder(net, tmp_path):
    src, dst = tmp_path / "series", tmp_path / "sr"
    src.mkdir()
    write_dicom(src / "a.dcm", rng_image((6, 6), 100, np.uint16), generate_uid())
    upscale.upscale_path(src, dst, net)  # a series folder this project wrote
    with pytest.raises(upscale.DataError, match="already exists"):
        upscale.upscale_path(src, dst, net)
    upscale.upscale_path(src, dst, net, force=True)
    assert sorted(p.name for p in dst.iterdir()) == ["a.dcm"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series", "sr"]
    (dst / "stale.dcm").write_bytes(b"x")  # not this project's: the folder is no longer replaced
    with pytest.raises(upscale.DataError, match="stale.dcm, which carries no mark"):
        upscale.upscale_path(src, dst, net, force=True)
    assert (dst / "stale.dcm").read_bytes() == b"x"


# -------------------------------------------------------------------------------- NIfTI

def oblique_affine():
    c, s = np.cos(0.5), np.sin(0.5)
    rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 1.1, 2.5])
    affine[:3, 3] = [-30.0, 12.0, 5.0]
    return affine


def save_nifti(path, data, scaling=None):
    img = nib.Nifti1Image(data, oblique_affine())
    img.set_qform(oblique_affine(), code=1)
    if scaling is not None:
        img.header.set_slope_inter(*scaling)
    nib.save(img, str(path))
    return nib.load(str(path))


def check_nifti_geometry(old, new, planes, axis):
    assert new.shape == tuple(n * 3 if d in planes else n for d, n in enumerate(old.shape))
    for form in (new.get_qform(), new.get_sform(), new.affine):
        np.testing.assert_allclose(form[:3, planes], old.affine[:3, planes] / 3, atol=1e-5)
        np.testing.assert_allclose(form[:3, axis], old.affine[:3, axis], atol=1e-5)
        for k in (0, old.shape[axis] - 1):
            index_new, index_old = np.ones(4), np.r_[0.0, 0.0, 0.0, 1.0]
            index_new[axis] = index_old[axis] = k
            np.testing.assert_allclose(form @ index_new, old.affine @ index_old, atol=1e-4)
    zooms = np.array(old.header.get_zooms())
    zooms[planes] /= 3
    np.testing.assert_allclose(new.header.get_zooms(), zooms, rtol=1e-6)
    assert new.header["qform_code"] == old.header["qform_code"]
    assert new.header["sform_code"] == old.header["sform_code"]


def slices(data, planes):
    return np.moveaxis(data, planes, (-2, -1))


def test_nifti_float32_axis2(net, tmp_path):
    data = np.random.RandomState(2).randn(7, 6, 4).astype(np.float32) * 100
    old = save_nifti(tmp_path / "in.nii.gz", data)
    info = upscale.upscale_path(tmp_path / "in.nii.gz", tmp_path / "out.nii.gz", net)
    new = nib.load(str(tmp_path / "out.nii.gz"))
    assert info["slices"] == 4 and new.get_data_dtype() == np.float32
    check_nifti_geometry(old, new, [0, 1], 2)
    got = new.get_fdata()
    for k in range(4):
        np.testing.assert_allclose(got[..., k], bicubic(data[..., k]), atol=1e-3)


def test_nifti_uint8_axis0(net, tmp_path):
    data = rng_image((3, 6, 5), 256, np.uint8)
    old = save_nifti(tmp_path / "in.nii", data)
    info = upscale.upscale_path(tmp_path / "in.nii", tmp_path / "out.nii", net, axis=0)
    new = nib.load(str(tmp_path / "out.nii"))
    assert new.get_data_dtype() == np.uint8 and info["window"] == [0.0, 255.0]
    check_nifti_geometry(old, new, [1, 2], 0)
    got = np.asanyarray(new.dataobj)
    for k in range(3):
        assert_rounds_to(got[k], bicubic(data[k]), lo=0, hi=255)


def test_nifti_axis_counts_ras_axes_as_data_prep_does(net, tmp_path):
    """Voxel axes stored as (S, A, R): --axis 2 (axial) slices along voxel axis 0."""
    data = rng_image((4, 6, 7), 256, np.uint8)
    affine = np.zeros((4, 4))
    affine[:3, :3] = [[0, 0, 0.8], [0, 1.1, 0], [2.5, 0, 0]]
    affine[3, 3] = 1
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    nib.save(img, str(tmp_path / "in.nii"))
    old = nib.load(str(tmp_path / "in.nii"))
    info = upscale.upscale_path(tmp_path / "in.nii", tmp_path / "out.nii", net, axis=2)
    new = nib.load(str(tmp_path / "out.nii"))
    assert info["slices"] == 4
    check_nifti_geometry(old, new, [1, 2], 0)
    got = np.asanyarray(new.dataobj)
    for k in range(4):
        assert_rounds_to(got[k], bicubic(data[k]), lo=0, hi=255)


def test_nifti_with_a_degenerate_affine_is_one_clear_error(net, tmp_path):
    path = tmp_path / "in.nii"
    nib.save(nib.Nifti1Image(rng_image((4, 6, 7), 256, np.uint8), np.eye(4)), str(path))
    raw = bytearray(path.read_bytes())  # nibabel will not write a singular affine: patch it in
    raw[252:256] = np.array([0, 2], "<i2").tobytes()  # qform_code 0, sform_code 2
    raw[320:324] = np.float32(0).tobytes()  # srow_z[2]: voxel axis 2 has no extent
    path.write_bytes(bytes(raw))
    assert np.linalg.matrix_rank(nib.load(str(path)).affine[:3, :3]) == 2
    with pytest.raises(upscale.DataError, match="no voxel axis for RAS"):
        upscale.upscale_path(tmp_path / "in.nii", tmp_path / "out.nii", net, axis=2)
    assert not (tmp_path / "out.nii").exists()


def test_nifti_scaled_int16_keeps_its_scaling(net, tmp_path):
    stored = rng_image((5, 6, 2), 2000, np.int16) - 500
    old = save_nifti(tmp_path / "in.nii", stored, scaling=(0.5, 10.0))
    upscale.upscale_path(tmp_path / "in.nii", tmp_path / "out.nii", net)
    new = nib.load(str(tmp_path / "out.nii"))
    assert new.get_data_dtype() == np.int16
    assert (new.dataobj.slope, new.dataobj.inter) == (0.5, 10.0)
    values, got = old.get_fdata(), new.get_fdata()
    for k in range(2):
        assert_rounds_to(got[..., k], bicubic(values[..., k]), unit=0.5)  # stored grid: 0.5
