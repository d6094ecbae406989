"""Through-plane super-resolution of thick-slice scans (#27): the one-axis degradation against its
definition, the geometry written back (NIfTI, NRRD, DICOM), the output overlaying the input, a tiny
volume end to end, and the inputs refused with one line."""
import json
import math
import signal

import nibabel as nib
import numpy as np
import pydicom
import pytest

from data_prep.one_axis import degrade, interpolate, slice_pairs, thicken
from data_prep.thick_scan import read_scan, refined_affine, write_scan
from tests.helpers import write_dicom, write_nifti, write_png
from tools import thickslice

OBLIQUE = np.array([[0.0, -1.0, 0.0, 10.0],   # columns: voxel axes (1, 1, 3 mm, rotated), origin
                    [0.8, 0.0, 1.8, -20.0],
                    [0.6, 0.0, -2.4, 5.0],
                    [0.0, 0.0, 0.0, 1.0]])


# ----------------------------------------------------------------- the degradation, by definition

def _mirror(i, n):
    """MATLAB's symmetric padding, one index at a time."""
    while i < 0 or i >= n:
        i = -1 - i if i < 0 else 2 * n - 1 - i
    return i


def _profile(t, profile, width):
    """The profile's weight of a thin voxel centred ``t`` from the thick slice's centre."""
    if profile == "gaussian":
        sigma = width / (2 * math.sqrt(2 * math.log(2)))
        return math.exp(-t * t / (2 * sigma * sigma)) if abs(t) <= 4 * sigma else 0.0
    return max(0.0, min(t + 0.5, width / 2) - max(t - 0.5, -width / 2))


def _keys(s):
    """Keys' cubic kernel, a = -0.5 (MATLAB's imresize)."""
    s = abs(s)
    if s <= 1:
        return 1.5 * s ** 3 - 2.5 * s ** 2 + 1
    return -0.5 * s ** 3 + 2.5 * s ** 2 - 4 * s + 2 if s < 2 else 0.0


def _direct(column, factor, profile, width):
    """One column thickened and interpolated back, loop by loop from the definitions."""
    n = len(column) // factor * factor
    thick = []
    for k in range(n // factor):
        centre = k * factor + (factor - 1) / 2
        taps = [(j, _profile(j - centre, profile, width)) for j in range(-3 * n, 4 * n)]
        total = sum(w for _, w in taps)
        thick.append(sum(w * column[_mirror(j, n)] for j, w in taps) / total)
    out = []
    for i in range(n):
        u = (i + 0.5) / factor - 0.5  # where thin voxel i lies among the thick slices
        m0 = math.floor(u)
        out.append(sum(_keys(u - m) * thick[_mirror(m, len(thick))] for m in range(m0 - 1, m0 + 3)))
    return np.array(out)


@pytest.mark.parametrize("factor,profile,width", [(3, "gaussian", 3.0), (4, "gaussian", 5.5),
                                                  (6, "boxcar", 6.0), (2, "boxcar", 3.0)])
def test_one_axis_degradation_is_its_definition(factor, profile, width):
    image = np.random.RandomState(factor).rand(26, 7)
    hr, up = degrade(image, 0, factor, profile, width)
    assert hr.shape == up.shape == (26 // factor * factor, 7)
    expected = np.stack([_direct(image[:, c], factor, profile, width) for c in range(7)], axis=1)
    np.testing.assert_allclose(up, expected, atol=1e-12)
    # along the other axis: the same with the image transposed; the first axis is untouched
    np.testing.assert_allclose(degrade(image.T, 1, factor, profile, width)[1], expected.T, atol=1e-12)


def test_boxcar_of_the_spacing_is_the_mean_of_each_block():
    volume = np.random.RandomState(1).rand(5, 4, 12)
    np.testing.assert_allclose(thicken(volume, 2, 4, "boxcar"),
                               volume.reshape(5, 4, 3, 4).mean(axis=3), atol=1e-12)


def test_pairs_come_from_both_in_plane_axes_and_skip_air():
    volume = np.zeros((40, 40, 2))
    volume[:, 20:, 0] = 1.0  # an edge across columns: only degrading along axis 1 blurs it
    x, y = slice_pairs(volume, 2, 3, 33, 21, 7)
    assert len(x) == len(y) > 0  # slice 1 is air: no patches of it
    differs = np.abs(x[:, 0, 6:27, 6:27] - y[:, 0]).reshape(len(x), -1).max(axis=1) > 1e-6
    assert differs.any() and not differs.all()  # blurred along axis 1, exact along axis 0


@pytest.mark.parametrize("edge_axis", [0, 1])
def test_pairs_are_blurred_along_their_columns_whichever_axis_was_degraded(edge_axis):
    """The net learns one direction: every pair's degradation runs along its columns, where the
    slice axis lies in the reformats the net is run on (inference.through_plane)."""
    image = np.zeros((40, 40))
    image[20:, :] = 1.0  # an edge across rows
    x, y = slice_pairs((image if edge_axis == 0 else image.T)[:, :, None], 2, 3, 33, 21, 7)
    blurred = np.abs(x[:, 0, 6:27, 6:27] - y[:, 0]).reshape(len(x), -1).max(axis=1) > 1e-6
    along_columns = np.ptp(y[:, 0], axis=2).max(axis=1) > 0  # the label changes along its rows
    assert blurred.any() and (~blurred).any()
    np.testing.assert_array_equal(blurred, along_columns)  # a blur along columns only


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_the_net_sees_the_slice_axis_along_its_columns(axis):
    from inference.through_plane import estimate_planes
    volume = np.random.RandomState(0).rand(5, 6, 7)
    seen = []

    def net(plane):
        seen.append(plane.shape[1])
        return plane * 2.0

    first, second = estimate_planes(net, volume, axis)
    assert set(seen) == {volume.shape[axis]}
    np.testing.assert_array_equal(first, volume * 2.0)
    np.testing.assert_array_equal(second, volume * 2.0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_flip_averages_the_net_on_each_plane_and_its_mirror_along_the_slice_axis(axis):
    from inference.through_plane import estimate_planes
    volume = np.random.RandomState(1).rand(5, 6, 7)
    before = volume.copy()

    def net(plane):  # a ramp along the columns (the slice axis): what a mirror evens out
        return plane + np.arange(plane.shape[1])

    ramp_mean = (volume.shape[axis] - 1) / 2.0
    for estimate in estimate_planes(net, volume, axis, flip=True):
        np.testing.assert_allclose(estimate, volume + ramp_mean, atol=1e-12)
    np.testing.assert_array_equal(volume, before)  # a net that hands back its input changes nothing
    ramp = np.expand_dims(np.arange(volume.shape[axis]), tuple(a for a in range(3) if a != axis))
    for estimate in estimate_planes(net, volume, axis):
        np.testing.assert_allclose(estimate, volume + ramp, atol=1e-12)


def test_the_runs_check_hands_the_net_its_columns_degraded():
    from eval.thickslice import score_one_axis
    image = np.random.RandomState(3).rand(30, 27) * 255.0
    seen = []

    def method(up):
        seen.append(up)
        return up

    score_one_axis([("noise", image)], method, 3, "gaussian", 3.0)
    np.testing.assert_array_equal(seen[0], degrade(image / 255.0, 0, 3, "gaussian", 3.0)[1].T)
    np.testing.assert_array_equal(seen[1], degrade(image / 255.0, 1, 3, "gaussian", 3.0)[1])


# ------------------------------------------------------------------------------- geometry

def test_nifti_round_trip_refines_the_slice_axis(tmp_path):
    src = write_nifti(tmp_path / "thick.nii.gz", np.random.RandomState(0).rand(6, 5, 4).astype(np.float32), OBLIQUE)
    scan = read_scan(src)
    assert scan.axis == 2 and scan.factor() == 3 and scan.values.shape == (6, 5, 4)
    write_scan(tmp_path / "fine.nii.gz", scan, np.zeros((6, 5, 12)), 3, "test")
    out = nib.load(str(tmp_path / "fine.nii.gz"))
    np.testing.assert_allclose(out.affine, refined_affine(OBLIQUE, 2, 3), atol=1e-5)
    np.testing.assert_allclose(out.header.get_zooms(), (1, 1, 1), atol=1e-5)
    _assert_overlays(OBLIQUE, out.affine, 3)


def test_nrrd_round_trip_refines_the_slice_axis(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    image = sitk.GetImageFromArray(np.random.RandomState(0).rand(4, 5, 6).astype(np.float32))  # z, y, x
    image.SetSpacing((1.0, 1.0, 3.0))
    image.SetOrigin((3.0, -2.0, 7.5))
    image.SetDirection(tuple(np.linalg.qr(np.random.RandomState(2).randn(3, 3))[0].ravel()))
    sitk.WriteImage(image, str(tmp_path / "thick.nrrd"))
    scan = read_scan(tmp_path / "thick.nrrd")
    assert scan.factor() == 3
    shape = list(scan.values.shape)
    shape[scan.axis] *= 3
    write_scan(tmp_path / "fine.nrrd", scan, np.zeros(shape), 3, "test")
    out = sitk.ReadImage(str(tmp_path / "fine.nrrd"))
    np.testing.assert_allclose(out.GetSpacing(), (1, 1, 1), atol=1e-6)
    np.testing.assert_allclose(out.GetDirection(), image.GetDirection(), atol=1e-6)
    _assert_overlays(read_scan(tmp_path / "thick.nrrd").affine, read_scan(tmp_path / "fine.nrrd").affine, 3)


def _assert_overlays(thick, fine, factor, axis=2):
    """Every thick slice's centre is the mean of the centres of the ``factor`` new slices in it,
    and the new slices are the thick spacing / factor apart along the same direction."""
    for k in range(3):
        inside = [fine @ [1, 2, k * factor + j, 1] for j in range(factor)]
        np.testing.assert_allclose(np.mean(inside, axis=0), thick @ [1, 2, k, 1], atol=1e-4)
    np.testing.assert_allclose(fine[:3, axis] * factor, thick[:3, axis], atol=1e-5)


def test_dicom_series_becomes_a_new_series_on_the_finer_slices(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    orientation = (1, 0, 0, 0, 0.8, -0.6)  # oblique: the normal is (0, 0.6, 0.8)
    for k in range(4):
        path = write_dicom(series / f"{k}.dcm", np.full((6, 5), 100 * k + 50), instance=k + 1,
                           position=(0, 0.6 * 2 * k, 0.8 * 2 * k), orientation=orientation)
        ds = pydicom.dcmread(str(path))
        ds.PixelSpacing = [0.5, 0.5]
        ds.save_as(str(path))
    scan = read_scan(series)
    assert scan.spacing == pytest.approx((0.5, 0.5, 2.0)) and scan.factor() == 4
    write_scan(tmp_path / "out", scan, np.full((6, 5, 8), 7.0), 2, "test")
    files = sorted((tmp_path / "out").iterdir())
    datasets = [pydicom.dcmread(str(f)) for f in files]
    assert len(datasets) == 8
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert datasets[0].SeriesInstanceUID != pydicom.dcmread(str(series / "0.dcm")).SeriesInstanceUID
    assert len({ds.SOPInstanceUID for ds in datasets}) == 8
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    steps = np.diff(positions, axis=0)
    np.testing.assert_allclose(steps, np.tile([0, 0.6, 0.8], (7, 1)), atol=1e-4)  # 2 mm / 2 along the normal
    np.testing.assert_allclose(positions[:2].mean(axis=0), [0, 0, 0], atol=1e-4)  # thick slice 0's centre
    assert float(datasets[0].SliceThickness) == pytest.approx(1.0)
    assert all(ds.pixel_array.max() == 7 for ds in datasets)


# --------------------------------------------------------------------------- end to end

def _phantom(shape=(64, 64, 15), seed=0):
    """Smooth blobs in a box, one bright thin plane at z = 7."""
    from scipy import ndimage
    rng = np.random.RandomState(seed)
    volume = ndimage.gaussian_filter(rng.rand(*shape), 2.0) * 400
    volume[:, :, 7] += 300
    return volume


@pytest.mark.slow
def test_tiny_volume_end_to_end_overlays_the_truth(tmp_path, capsys):
    thin = _phantom()
    thin_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    thin_affine[:3, 3] = [-30, 40, 12]
    thick_affine = thin_affine.copy()
    thick_affine[:3, 3] += thin_affine[:3, 2] * 1.0  # thick slice 0 is centred on thin slice 1
    thick_affine[:3, 2] *= 3
    src = write_nifti(tmp_path / "thick.nii.gz", thicken(thin, 2, 3).astype(np.float32), thick_affine)
    out = tmp_path / "fine.nii.gz"
    status = thickslice.main(["--in", str(src), "--out", str(out), "--iters", "8",
                              "--work", str(tmp_path / "work")])
    assert status == 0, capsys.readouterr().err
    # Ctrl-C interrupts the net's pass after training (the trainer's handler would only note it)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    fine = nib.load(str(out))
    assert fine.shape == thin.shape
    np.testing.assert_allclose(fine.affine, thin_affine, atol=1e-5)  # the truth's own grid
    profile = np.asarray(fine.dataobj).mean(axis=(0, 1))
    assert int(np.argmax(profile)) == 7  # the bright plane where it is in the truth
    manifests = list((tmp_path / "work").glob("rrelu_adam-*/seed0/manifest.json"))
    assert len(manifests) == 1
    # the trainer's fastest layers without asking (core.config.THICKSLICE_SETTINGS), as make passes
    from core.config import dataset_config
    from tools.train import auto_act_layer
    chosen = auto_act_layer("rrelu", dataset_config("pairs", ["act_layer=auto"], solver="adam"))
    assert json.loads(manifests[0].read_text())["config"]["act_layer"] == chosen
    # a rerun reuses the data set and the finished run; --no-flip: the net once per plane
    flipped = np.asarray(fine.dataobj, dtype=np.float64)
    assert thickslice.main(["--in", str(src), "--out", str(out), "--force", "--iters", "8",
                            "--work", str(tmp_path / "work"), "--no-flip"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    plain = np.asarray(nib.load(str(out)).dataobj, dtype=np.float64)
    assert np.abs(plain - flipped).max() > 1e-3 * np.ptp(flipped)  # the default did mirror
    # another scan of the same name: new pairs, a new run (not the finished one of the first)
    write_nifti(src, thicken(_phantom(seed=1), 2, 3).astype(np.float32), thick_affine)
    assert thickslice.main(["--in", str(src), "--out", str(out), "--force", "--iters", "8",
                            "--work", str(tmp_path / "work")]) == 0
    assert "nothing to do" not in capsys.readouterr().out


# ------------------------------------------------------------------------------ refused

def _volume(tmp_path, shape, zooms):
    return write_nifti(tmp_path / "in.nii.gz", np.random.RandomState(0).rand(*shape).astype(np.float32),
                       np.diag([*zooms, 1.0]))


@pytest.mark.parametrize("case,expected", [
    ("png", "2-D"),
    ("isotropic", "isotropic"),
    ("few", "at least 4"),
    ("non-integer", "not an integer"),
    ("4-D", "4-D"),
    ("one slice", "2-D"),
    ("small", "too few to train on"),
])
def test_bad_inputs_are_one_line(tmp_path, capsys, case, expected):
    if case == "png":
        src = write_png(tmp_path / "in.png", np.zeros((40, 40), np.uint8))
    elif case == "4-D":
        src = write_nifti(tmp_path / "in.nii.gz", np.zeros((40, 40, 8, 2), np.float32))
    else:
        shape, zooms = {"isotropic": ((40, 40, 8), (1, 1, 1)), "few": ((40, 40, 3), (1, 1, 3)),
                        "non-integer": ((40, 40, 8), (1, 1, 2.5)), "one slice": ((40, 40, 1), (1, 1, 3)),
                        "small": ((20, 40, 8), (1, 1, 3))}[case]
        src = _volume(tmp_path, shape, zooms)
    out = tmp_path / ("out.png" if case == "png" else "out.nii.gz")
    status = thickslice.main(["--in", str(src), "--out", str(out), "--work", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("thickslice: error:") and expected in err, err
    assert not out.exists() and not (tmp_path / "work").exists()


# ------------------------------------------------------------------------------ validation

def test_validation_baselines_sample_where_the_thin_slices_are():
    """A ramp along z thickened with a symmetric profile stays the ramp at the thick slices'
    centres; cubic (imresize) and the cubic spline both give it back at the thin slices."""
    from tools.thickslice_validate import spline_z, thick_scan
    z = np.arange(45, dtype=np.float64)
    thin = np.broadcast_to(2.0 * z + 5.0, (3, 4, 45)).copy()
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    cropped, thick, thick_affine = thick_scan(thin, affine, 3)
    inner = slice(10, 32)  # where no tap of cubic reaches a thick slice that the mirroring bent
    np.testing.assert_allclose(thick[0, 0, 2:8], 2.0 * (np.arange(2, 8) * 3 + 1) + 5.0, atol=1e-9)
    np.testing.assert_allclose(interpolate(thick, 2, 3)[..., inner], cropped[..., inner], atol=1e-9)
    middle = slice(18, 27)  # a spline's prefilter reaches every slice, fading by 0.27 a slice
    np.testing.assert_allclose(spline_z(thick, 3)[..., middle], cropped[..., middle], atol=1e-3)
    np.testing.assert_allclose(thick_affine @ [0, 0, 2, 1], affine @ [0, 0, 7, 1])  # slice 2: thin 7
    np.testing.assert_allclose(refined_affine(thick_affine, 2, 3), affine)


def test_figure_names_the_reformats_and_refuses_a_misplaced_output(tmp_path):
    from core.errors import DataError
    from tools.thickslice_figure import figure, plane_names
    assert plane_names(OBLIQUE, 2) == ["coronal", "sagittal"]  # voxel axis 0 runs A-P, 1 R-L
    src = write_nifti(tmp_path / "thick.nii.gz", np.random.RandomState(0).rand(30, 30, 4).astype(np.float32), OBLIQUE)
    scan = read_scan(src)
    good = write_nifti(tmp_path / "fine.nii.gz", np.zeros((30, 30, 12), np.float32), refined_affine(OBLIQUE, 2, 3))
    assert figure(scan, read_scan(good)).shape == (2 * (18 + 12), 3 * 30)
    bad = write_nifti(tmp_path / "bad.nii.gz", np.zeros((30, 30, 12), np.float32), OBLIQUE @ np.diag([1, 1, 1 / 3, 1]))
    with pytest.raises(DataError, match="does not overlay"):
        figure(scan, read_scan(bad))


@pytest.mark.slow
def test_make_thickslice_reads_in_from_where_make_was_called(tmp_path):
    from tests.helpers import ROOT, clean_env, make
    (tmp_path / "it's here").mkdir()
    write_png(tmp_path / "it's here" / "in.png", np.zeros((40, 40), np.uint8))
    proc = make("-C", str(ROOT), "thickslice", "IN=it's here/in.png", "OUT=out.png",
                cwd=tmp_path, env=clean_env(PWD=str(tmp_path)))
    assert proc.returncode != 0
    assert "thickslice: error: it's here/in.png: a single PNG/TIFF/BMP image is 2-D" in proc.stderr
    missing = make("-C", str(ROOT), "thickslice", "IN=x.nii.gz", cwd=tmp_path)
    assert missing.returncode != 0 and "set OUT=" in missing.stderr
