"""Series geometry (issue 32, case 4): a DICOM series whose slices are not one evenly spaced stack
(a missing slice, a duplicated position, two interleaved stacks, two orientations, a shifted
stack) is refused by `make thickslice`, which places its output slices by one spacing, with one
line naming the slices; `data_prep` and `inference.upscale`, which do not use the spacing, read it with
a warning that says what they do. A slice of another size, a SliceThickness or PixelSpacing that
is not a positive number, a NIfTI pixdim of 0 or below: one line naming the file and the value.

The series are copies of the shipped ProstateX series (19 oblique slices, 3 mm apart) with a file
removed, copied or edited, or small series written here."""
import shutil
import struct
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest

from core.config import ROOT
from core.errors import DataError
from data_prep.io import dicom_series
from data_prep.readers import read_volume
from data_prep.sources import PROSTATE_DIR
from data_prep.thick_scan import read_scan
from inference import upscale
from tests.helpers import rng_image, write_dicom

GAP = "slices 9 and 10 (1-11.dcm, 1-09.dcm) at -27.8764 and -21.8764 mm along the slice normal " \
      "are 6 mm apart, the others 3 mm"


def shipped(tmp_path, name="series"):
    """A copy of the shipped series that the test may change."""
    return shutil.copytree(PROSTATE_DIR, tmp_path / name)


def edit(path, **values):
    ds = pydicom.dcmread(str(path))
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.save_as(str(path))


def gapped(tmp_path):
    """The shipped series without its 10th slice (1-10.dcm): 1-09 and 1-11 are 6 mm apart."""
    series = shipped(tmp_path)
    (series / "1-10.dcm").unlink()
    return series


def small_series(folder, positions, orientation=(1, 0, 0, 0, 1, 0), shape=(12, 10)):
    """Small slices at ``positions`` (3-vectors), 0.5 x 0.5 mm pixels, 3 mm thick."""
    folder.mkdir()
    for k, position in enumerate(positions):
        path = write_dicom(folder / f"s{k:02d}.dcm", rng_image(shape, 1000, np.uint16, seed=k),
                           instance=k + 1, position=position, orientation=orientation)
        edit(path, PixelSpacing=[0.5, 0.5], SliceThickness=3)
    return folder


def on_z(*zs):
    return [(0.0, 0.0, z) for z in zs]


# ------------------------------------------------------------- thickslice refuses, naming the slices

def test_thickslice_refuses_a_series_with_a_missing_slice(tmp_path):
    with pytest.raises(DataError) as err:
        read_scan(gapped(tmp_path))
    assert GAP in str(err.value) and "not evenly spaced" in str(err.value)


def test_thickslice_refuses_a_duplicated_position(tmp_path):
    series = shipped(tmp_path)
    shutil.copy(series / "1-10.dcm", series / "1-10b.dcm")
    with pytest.raises(DataError, match=r"slices 10 and 11 \(1-10.dcm, 1-10b.dcm\) are both at "
                                        r"-24.8764 mm along the slice normal, the others 3 mm"):
        read_scan(series)


def test_thickslice_refuses_two_interleaved_stacks(tmp_path):
    """Two stacks 3 mm apart, the second 1 mm above the first: gaps of 1 and 2 mm."""
    series = small_series(tmp_path / "s", on_z(0, 1, 3, 4, 6, 7))
    with pytest.raises(DataError, match=r"slices 2 and 3 \(s01.dcm, s02.dcm\) at 1 and 3 mm along "
                                        r"the slice normal are 2 mm apart, 1 more gap differs from "
                                        r"the median 1 mm"):
        read_scan(series)


def test_thickslice_refuses_two_orientations(tmp_path):
    series = shipped(tmp_path)
    edit(series / "1-07.dcm", ImageOrientationPatient=[0, 1, 0, 0, 0, -1])
    with pytest.raises(DataError, match=r"1-07.dcm has ImageOrientationPatient 0\\1\\0\\0\\0\\-1, "
                                        r".* two orientations in one series"):
        read_scan(series)


def test_thickslice_refuses_a_stack_shifted_across_its_normal(tmp_path):
    """A gantry tilt: each slice 1 mm further along x; the gaps along the normal are even."""
    series = small_series(tmp_path / "s", [(k * 1.0, 0.0, 3.0 * k) for k in range(5)])
    with pytest.raises(DataError, match=r"slice 2 \(s01.dcm\) lies 1 mm across the slice normal"):
        read_scan(series)


def test_positions_rounded_as_scanners_write_them_are_one_spacing(tmp_path):
    """0.5 mm slices, positions written to 0.01 mm on an oblique stack: accepted, and the spacing is
    the mean gap (the output's slices land on the input's)."""
    normal = np.array([0.0, 0.6, 0.8])
    positions = [np.round(normal * 0.5 * k + [0.003, 0.004, 0.0], 2) for k in range(12)]
    series = small_series(tmp_path / "s", positions, orientation=(1, 0, 0, 0, 0.8, -0.6))
    scan = read_scan(series)
    assert scan.spacing[2] == pytest.approx(0.5, abs=2e-3)
    assert read_scan(PROSTATE_DIR).spacing[2] == pytest.approx(3.0, abs=1e-6)


def test_check_even_spacing_takes_gaps_within_the_tolerance_and_names_the_first_that_is_not():
    names = list("abcde")
    wobble = 0.9 * dicom_series.SPACING_TOLERANCE * 3
    assert dicom_series.check_even_spacing([0, 3 + wobble, 6, 9 - wobble, 12], names, "x") == 3
    with pytest.raises(DataError, match=r"^x: slices 2 and 3 \(b, c\) at 3 and 6.5 mm .* are 3.5 mm "
                                        r"apart, the others 3 mm"):
        dicom_series.check_even_spacing([0, 3, 6.5, 9.5, 12.5], names, "x")
    with pytest.raises(DataError, match=r"slices 1 and 2 \(a, b\) are both at 0 mm"):
        dicom_series.check_even_spacing([0, 0, 0, 3, 3], names, "x")  # the median gap is 0


def test_a_series_without_positions_has_nothing_to_check(tmp_path):
    items = [(tmp_path / f"{k}.dcm", pydicom.Dataset()) for k in range(3)]
    assert dicom_series.check_stack(items, tmp_path) is None


# ------------------------------------------- the thickslice noise: one line naming the file and value

def test_thickslice_refuses_a_slice_of_another_size(tmp_path):
    series = small_series(tmp_path / "s", on_z(0, 3, 6, 9, 12))
    (series / "s02.dcm").unlink()
    small_series(tmp_path / "odd", on_z(6), shape=(12, 11))
    shutil.move(tmp_path / "odd" / "s00.dcm", series / "s02.dcm")
    with pytest.raises(DataError, match=r"s02.dcm is 11x12 pixels where the other 4 slices are "
                                        r"10x12"):
        read_scan(series)


@pytest.mark.parametrize("keyword, value, message", [
    ("SliceThickness", -3, r"1-19.dcm: SliceThickness -3(.0)?: the slice thickness must be a positive"),
    ("SliceThickness", 0, r"1-19.dcm: SliceThickness 0(.0)?: "),
    ("PixelSpacing", [0, 0], r"1-19.dcm: PixelSpacing 0 x 0 mm: a spacing must be a positive number"),
    ("PixelSpacing", [0.5, -0.5], r"1-19.dcm: PixelSpacing 0.5 x -0.5 mm"),
])
def test_thickslice_refuses_a_spacing_or_thickness_that_is_not_positive(tmp_path, keyword, value, message):
    series = shipped(tmp_path)
    for path in series.iterdir():
        edit(path, **{keyword: value})
    with pytest.raises(DataError, match=message):
        read_scan(series)


def nifti_with_pixdim(path, pixdim3, sform=True):
    """A 3 mm NIfTI whose stored pixdim[3] is ``pixdim3`` (nibabel would repair it on save: the
    bytes are written here)."""
    img = nib.Nifti1Image(np.random.RandomState(0).rand(40, 40, 8).astype(np.float32),
                          np.diag([1.0, 1.0, 3.0, 1.0]))
    if not sform:
        img.set_sform(None, code=0)
    nib.save(img, str(path))
    raw = bytearray(path.read_bytes())
    raw[76 + 4 * 3:76 + 4 * 4] = struct.pack("<f", pixdim3)  # pixdim[3] of the 348-byte header
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("pixdim3", [0.0, -3.0])
@pytest.mark.parametrize("sform", [True, False], ids=["sform", "qform"])
def test_thickslice_refuses_a_nifti_pixdim_that_is_not_positive(tmp_path, pixdim3, sform, capfd):
    path = nifti_with_pixdim(tmp_path / "thick.nii", pixdim3, sform)
    with pytest.raises(DataError, match=rf"thick.nii: pixdim\[3\] is {pixdim3:g} in the NIfTI header"):
        read_scan(path)
    assert capfd.readouterr().err == ""  # nibabel's note that it repaired the header is not printed


@pytest.mark.slow
@pytest.mark.parametrize("case", ["gap", "size", "thickness", "pixdim"])
def test_thickslice_cli_refuses_in_one_line_before_training(tmp_path, case):
    if case == "gap":
        src, expected = gapped(tmp_path), GAP
    elif case == "size":
        src = shipped(tmp_path)
        ds = pydicom.dcmread(str(src / "1-05.dcm"))
        ds.PixelData, ds.Columns = ds.pixel_array[:, :380].tobytes(), 380
        ds.save_as(str(src / "1-05.dcm"))
        expected = "1-05.dcm is 380x384 pixels where the other 18 slices are 384x384"
    elif case == "thickness":
        src = shipped(tmp_path)
        for path in src.iterdir():
            edit(path, SliceThickness=-3)
        expected = "1-19.dcm: SliceThickness -3"
    else:
        src, expected = nifti_with_pixdim(tmp_path / "thick.nii", 0.0, sform=False), "pixdim[3] is 0"
    out, work = tmp_path / ("out.nii" if case == "pixdim" else "out"), tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "tools.thickslice", "--in", str(src), "--out", str(out),
                           "--work", str(work)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("thickslice: error: ") and expected in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not out.exists() and not work.exists()  # refused before the training pairs


# --------------------------------------------------- the commands that do not use the slice spacing

def test_data_prep_reads_an_uneven_series_slice_by_slice_with_a_warning(tmp_path, capsys):
    slices, info = read_volume(gapped(tmp_path), rule="mr")
    err = capsys.readouterr().err
    assert len(slices) == 18 and info["slice_spacing"] is None
    assert err.count("\n") == 1 and GAP in err
    assert "data_prep uses the slices one by one as 2-D images" in err
    slices, info = read_volume(PROSTATE_DIR, rule="mr")  # an even series keeps its spacing
    assert info["slice_spacing"] == pytest.approx(3.0) and capsys.readouterr().err == ""


def test_upscale_keeps_each_slice_of_an_uneven_series_where_it_was_read(net, tmp_path, capsys):
    src = small_series(tmp_path / "s", on_z(0, 3, 6, 12, 15))
    info = upscale.upscale_path(src, tmp_path / "out", net)
    err = capsys.readouterr().err
    assert info["slices"] == 5
    assert "slices 3 and 4 (s02.dcm, s03.dcm) at 6 and 12 mm along the slice normal are 6 mm apart" in err
    assert "inference.upscale refines each slice in-plane and keeps its position as read" in err
    for k, z in enumerate((0, 3, 6, 12, 15)):
        assert float(pydicom.dcmread(str(tmp_path / "out" / f"s{k:02d}.dcm")).ImagePositionPatient[2]) == z


def test_upscale_refuses_a_series_with_a_slice_of_another_size(net, tmp_path):
    """docs/reliability.md, "Bad slices: the rule": an upscale never loses a slice."""
    src = small_series(tmp_path / "s", on_z(0, 3, 6))
    small_series(tmp_path / "odd", on_z(9), shape=(12, 11))
    shutil.move(tmp_path / "odd" / "s00.dcm", src / "s03.dcm")
    with pytest.raises(DataError, match=r"s03.dcm is 11x12 pixels where the other 3 slices are 10x12"):
        upscale.upscale_path(src, tmp_path / "out", net)
    assert not (tmp_path / "out").exists()
