"""ECLARE as the baseline of `make thickslice-validate` (issue 36): its output read on the truth's
grid by world position, its run reused only for the same scan and settings, a failed or missing
install said in one line; and, where .venv-eclare is installed, the real ECLARE on a tiny volume:
its output lies on the truth's grid and is scored by the same code."""
import json
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest

from core.errors import DataError
from tools import eclare, thickslice_validate

FAKE = textwrap.dedent('''\
    #!{python}
    """A stand-in for run-eclare: linear interpolation along the thick axis (z), written on
    ECLARE's grid (radifox update_affine: the thin voxels centred inside each thick one)."""
    import sys
    from pathlib import Path
    import nibabel as nib
    import numpy as np
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    calls = Path({calls!r})
    calls.write_text(calls.read_text() + " ".join(sys.argv[1:]) + "\\n" if calls.exists() else " ".join(sys.argv[1:]) + "\\n")
    if Path({fail!r}).exists():
        print("Traceback: something broke")
        sys.exit(1)
    scan = Path(args["--in-fpath"])
    img = nib.load(str(scan))
    v = np.asarray(img.dataobj, dtype=np.float64)
    f = int(round(img.header.get_zooms()[2] / img.header.get_zooms()[0]))
    z = (np.arange(v.shape[2] * f) + 0.5) / f - 0.5
    k = np.clip(z, 0, v.shape[2] - 1)
    lo = np.floor(k).astype(int); hi = np.minimum(lo + 1, v.shape[2] - 1); w = k - lo
    out = v[:, :, lo] * (1 - w) + v[:, :, hi] * w
    affine = img.affine.copy()
    affine[:3, 3] -= affine[:3, 2] * (f - 1) / (2.0 * f)
    affine[:3, 2] /= f
    name = scan.name.replace(".nii", args["--suffix"] + ".nii")
    nib.save(nib.Nifti1Image(out.astype(np.float32), affine), str(Path(args["--out-dir"]) / name))
''')


@pytest.fixture
def fake_venv(tmp_path, monkeypatch):
    """(a venv whose run-eclare is FAKE, its log of calls, the file that makes it fail)."""
    venv, calls, fail = tmp_path / "venv", tmp_path / "calls.txt", tmp_path / "fail"
    (venv / "bin").mkdir(parents=True)
    exe = venv / "bin" / "run-eclare"
    exe.write_text(FAKE.format(python=sys.executable, calls=str(calls), fail=str(fail)))
    exe.chmod(0o755)
    (venv / eclare.INSTALLED).write_text("pins")
    monkeypatch.setattr(eclare, "VENV", venv)
    return venv, calls, fail


def thick_nifti(path, factor=3, shape=(12, 10, 18), origin=(5.0, -3.0, 20.0)):
    """(the thin truth: a ramp along z, its affine, the thick scan written at ``path``)."""
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = origin
    thin = np.broadcast_to(np.arange(shape[2], dtype=np.float64) * 2.0 + 1.0, shape).copy()
    thin_c, thick, thick_affine = thickslice_validate.thick_scan(thin, affine, factor)
    nib.save(nib.Nifti1Image(thick.astype(np.float32), thick_affine), str(path))
    return thin_c, affine, path


def calls_of(calls):
    return calls.read_text().splitlines() if calls.exists() else []


# -------------------------------------------------------------------------------- the grid

def test_the_same_grid_is_taken_as_it_is():
    values = np.random.RandomState(0).rand(4, 5, 6)
    affine = np.diag([1.0, 2.0, 0.5, 1.0])
    out, offset = eclare.on_grid(nib.Nifti1Image(values, affine), affine, values.shape)
    assert offset == 0.0 and np.array_equal(out, values)


def test_a_shifted_flipped_grid_is_read_by_world_position():
    """ECLARE's voxels one slice further and z flipped: read at the truth's positions, the ramp
    comes back; taken index for index it would not."""
    shape = (3, 4, 9)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    theirs = affine.copy()
    theirs[2, 2], theirs[2, 3] = -1.0, 9.0  # their voxel k lies at z = 9 - k
    z_world = 9.0 - np.arange(11)  # 11 slices: they cover ours (z = 0..8) and more
    values = np.broadcast_to(3.0 * z_world + 1.0, (3, 4, 11)).copy()
    out, offset = eclare.on_grid(nib.Nifti1Image(values, theirs), affine, shape)
    np.testing.assert_allclose(out[1, 2], 3.0 * np.arange(9) + 1.0, atol=1e-9)
    assert offset > 1.0


def test_a_grid_that_does_not_cover_the_truth_is_refused():
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    theirs = affine.copy()
    theirs[2, 3] = 3.0  # starts three slices late
    with pytest.raises(DataError, match="does not cover"):
        eclare.on_grid(nib.Nifti1Image(np.zeros((3, 4, 9)), theirs), affine, (3, 4, 9))


# -------------------------------------------------------------------------- the wrapper

def test_the_wrapper_gives_eclare_the_profile_and_reuses_only_the_same_run(tmp_path, fake_venv):
    _, calls, _ = fake_venv
    thin, affine, scan = thick_nifti(tmp_path / "vol_x3.nii.gz")
    out = tmp_path / "eclare_x3"
    image, wall, reused = eclare.run(scan, out, 128, "gaussian", 3.0)
    assert not reused and wall > 0 and len(calls_of(calls)) == 1
    line = calls_of(calls)[0].split()
    assert line[line.index("--n-patches") + 1] == "128"
    assert line[line.index("--relative-slice-thickness") + 1] == "3"
    assert line[line.index("--relative-slice-profile-type") + 1] == "gaussian"
    values, offset = eclare.on_grid(image, affine, thin.shape)
    assert offset < 1e-6  # the stand-in writes ECLARE's convention: the truth's grid
    np.testing.assert_allclose(values[0, 0, 6:12], thin[0, 0, 6:12], atol=1e-3)  # the ends mirror
    record = json.loads((out / eclare.RECORD).read_text())
    assert record["n_patches"] == 128 and record["wall_s"] == round(wall, 1)

    nib.save(nib.load(str(scan)), str(scan))  # the same voxels written again: reused
    _, wall2, reused = eclare.run(scan, out, 128, "gaussian", 3.0)
    assert reused and wall2 == record["wall_s"] and len(calls_of(calls)) == 1
    eclare.run(scan, out, 256, "gaussian", 3.0)  # other settings: run again
    assert len(calls_of(calls)) == 2
    thick_nifti(scan, origin=(5.0, -3.0, 21.0))  # the same voxels elsewhere: another scan
    eclare.run(scan, out, 256, "gaussian", 3.0)
    assert len(calls_of(calls)) == 3


def test_a_failed_run_leaves_the_last_good_one_and_names_its_log(tmp_path, fake_venv):
    _, calls, fail = fake_venv
    _, _, scan = thick_nifti(tmp_path / "vol_x3.nii.gz")
    out = tmp_path / "eclare_x3"
    eclare.run(scan, out, 128, "gaussian", 3.0)
    before = sorted(p.name for p in out.iterdir())
    fail.write_text("")
    with pytest.raises(eclare.EclareError, match=r"exit 1\): its log is .*eclare_x3\.failed\.log"):
        eclare.run(scan, out, 64, "gaussian", 3.0)
    assert sorted(p.name for p in out.iterdir()) == before
    assert "something broke" in (tmp_path / "eclare_x3.failed.log").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_validate_refuses_a_missing_eclare_in_one_line_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(eclare, "VENV", tmp_path / "nothing")
    assert thickslice_validate.main(["--out", str(tmp_path / "out"), "--factors", "3",
                                     "--eclare-patches", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ECLARE is not installed" in err[0] and "ECLARE_PATCHES=0" in err[0]
    assert not (tmp_path / "out").exists()


def test_validate_refuses_a_negative_patch_count(capsys):
    with pytest.raises(SystemExit) as stop:
        thickslice_validate.main(["--eclare-patches", "-1"])
    assert stop.value.code == 2 and "--eclare-patches must be 0" in capsys.readouterr().err


def test_the_table_puts_each_wall_time_beside_its_scores():
    row = {"psnr_brain_3d": 20.0, "psnr_slices": 22.0, "ssim_slices": 0.9}
    text = thickslice_validate.table({3: {"cubic spline along z": row,
                                          "ECLARE": {**row, "psnr_brain_3d": 21.5, "wall_s": 812.4}}})
    assert "| x3 | ECLARE | 21.50 | +1.50 | 22.00 | 0.9000 | 812 s |" in text
    assert "| x3 | cubic spline along z | 20.00 | +0.00 | 22.00 | 0.9000 | - |" in text


# ------------------------------------------------------------ the real ECLARE, when installed

@pytest.mark.slow
@pytest.mark.skipif(not (eclare.VENV / eclare.INSTALLED).is_file(),
                    reason="ECLARE is not installed (.venv-eclare: make thickslice-validate installs it)")
def test_real_eclare_output_overlays_the_truth(tmp_path):
    """A tiny volume thickened x3 as the validation thickens its truth: ECLARE's output (one
    batch of training: its quality means nothing here) lies on the truth's grid voxel for voxel
    (the same shape, the same affine: nothing resampled), and the validation's scores read it."""
    rng = np.random.RandomState(0)
    i, j, k = np.indices((24, 24, 18)).astype(np.float64)
    thin = 100 + 40 * np.sin(k / 1.7 + i / 5) + 30 * np.cos(j / 3 + k / 2.3) + rng.rand(24, 24, 18)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (4.0, -7.0, 12.0)
    thin, thick, thick_affine = thickslice_validate.thick_scan(thin, affine, 3)
    scan = tmp_path / "tiny_x3.nii.gz"
    nib.save(nib.Nifti1Image(thick.astype(np.float32), thick_affine), str(scan))
    image, wall, reused = eclare.run(scan, tmp_path / "eclare", 128, "gaussian", 3.0)
    assert image.shape == thin.shape and np.allclose(image.affine, affine, atol=1e-4)
    values, offset = eclare.on_grid(image, affine, thin.shape)
    assert offset < 1e-4 and not reused and wall > 0
    mask = np.zeros(thin.shape, bool)
    mask[2:-2, 2:-2, 3:-3] = True
    got = thickslice_validate.scores(thin, values, mask, (thin.min(), thin.max()))
    assert np.isfinite(got["psnr_brain_3d"]) and got["slices"] > 0
