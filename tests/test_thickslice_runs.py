"""Thick-slice runs keyed by content (#32): the work folder by the scan's voxels and geometry, the
pairs by their recipe, the run by the pairs and the settings, all under one lock; ITERS and SET
that differ from a finished run continue it or train a run of their own, never relabel it; NaN
and inf voxels kept; the run's own test is its own task; one line and one exit status for an
argument or an interrupt. Real Caffe training of a few iterations on a tiny volume."""
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import nibabel as nib
import numpy as np
import pytest

from core.config import ROOT
from data_prep.one_axis import degrade, slice_pairs, thicken
from data_prep.thick_scan import read_scan
from eval.metrics import psnr, to_uint8
from tests.helpers import write_nifti
from tools import thickslice

ITERS = "8"
THICK = np.diag([1.0, 1.0, 3.0, 1.0])  # 1 mm pixels, 3 mm slices: factor 3


def _scan(path, seed=0, shape=(64, 64, 15)):
    """A thick-slice NIfTI (float32) of smooth blobs thickened x3 along z; ``path``."""
    from scipy import ndimage
    path.parent.mkdir(parents=True, exist_ok=True)
    thin = ndimage.gaussian_filter(np.random.RandomState(seed).rand(*shape), 2.0) * 400
    return write_nifti(path, thicken(thin, 2, 3).astype(np.float32), THICK)


def _refine(src, out, *extra, work=None):
    argv = ["--in", str(src), "--out", str(out), "--force", *extra]
    return thickslice.main(argv + (["--work", str(work)] if work else []))


def _values(path):
    return np.asarray(nib.load(str(path)).dataobj)


def _run_named(text):
    """The run folder that the last "(run: ...)" line names."""
    return text.rsplit("(run: ", 1)[1].split(")")[0]


# ------------------------------------------------------------------ case 3: keyed by content

@pytest.mark.slow
def test_two_scans_of_one_name_never_share_a_run(tmp_path, capsys, monkeypatch):
    """Scan d, of scan c's folder name, interrupted after its pairs were built and then rerun, is
    refined by a net trained on d: the same volume as a run on d alone gives."""
    monkeypatch.setattr(thickslice, "WORK_ROOT", tmp_path / "runs")
    c, d = _scan(tmp_path / "c" / "ser.nii.gz", seed=0), _scan(tmp_path / "d" / "ser.nii.gz", seed=1)
    assert _refine(c, tmp_path / "c_fine.nii.gz", "--iters", ITERS) == 0
    from tools import train as trainer

    def interrupted(_args):
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(trainer, "run", interrupted)
        assert _refine(d, tmp_path / "d_fine.nii.gz", "--iters", ITERS) == 130
    capsys.readouterr()
    assert _refine(d, tmp_path / "d_fine.nii.gz", "--iters", ITERS) == 0
    out = capsys.readouterr().out
    assert "nothing to do" not in out, out
    assert _refine(d, tmp_path / "d_alone.nii.gz", "--iters", ITERS, work=tmp_path / "alone") == 0
    np.testing.assert_array_equal(_values(tmp_path / "d_fine.nii.gz"), _values(tmp_path / "d_alone.nii.gz"))
    assert not np.array_equal(_values(tmp_path / "d_fine.nii.gz"), _values(tmp_path / "c_fine.nii.gz"))


def _start(src, out, work, *extra):
    """``python -m tools.thickslice`` in a child process, training until it is stopped."""
    command = [sys.executable, "-m", "tools.thickslice", "--in", str(src), "--out", str(out),
               "--work", str(work), "--iters", "100000", "snapshot=1", *extra]
    return subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, GLOG_minloglevel="2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_training(child, work, timeout=120):
    """Until the child's run has written a snapshot (its training loop runs)."""
    deadline = time.time() + timeout
    while not list(work.glob("*/seed0/snapshots/*.caffemodel")):
        assert child.poll() is None, child.communicate()
        assert time.time() < deadline, "training never started"
        time.sleep(0.05)


def _tree(folder):
    """Every file under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_second_command_on_a_work_folder_is_refused_before_it_builds(tmp_path, capsys):
    work = tmp_path / "work"
    first = _start(_scan(tmp_path / "c" / "ser.nii.gz"), tmp_path / "c.nii.gz", work)
    try:
        _wait_for_training(first, work)
        pairs = _tree(work / "data")
        status = _refine(_scan(tmp_path / "d" / "ser.nii.gz", seed=1), tmp_path / "d.nii.gz",
                         "--iters", ITERS, work=work)
        err = capsys.readouterr().err
        assert status == 2 and err.count("\n") == 1 and "is in use by" in err, err
        assert _tree(work / "data") == pairs  # the first command's pairs, untouched
        assert not (tmp_path / "d.nii.gz").exists()
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)


@pytest.mark.slow
def test_sigterm_while_training_exits_130_as_an_interrupt_elsewhere(tmp_path):
    work = tmp_path / "work"
    child = _start(_scan(tmp_path / "ser.nii.gz"), tmp_path / "fine.nii.gz", work)
    _wait_for_training(child, work)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    last = err.strip().splitlines()[-1]
    assert child.returncode == 130, err[-800:]
    assert last.startswith("thickslice: interrupted") and "the same command continues" in last, last
    assert not (tmp_path / "fine.nii.gz").exists()


# ---------------------------------------------------------------- case 6: ITERS and SET

@pytest.mark.slow
def test_other_iterations_or_settings_never_relabel_a_finished_run(tmp_path, capsys):
    src, work = _scan(tmp_path / "ser.nii.gz"), tmp_path / "work"
    assert _refine(src, tmp_path / "i8.nii.gz", "--iters", ITERS, work=work) == 0
    eight = _run_named(capsys.readouterr().out)

    assert _refine(src, tmp_path / "i4.nii.gz", "--iters", "4", work=work) == 0
    out = capsys.readouterr().out
    assert "finished (4 iterations)" not in out and "more than 4" in out, out
    four = json.loads((tmp_path / _run_named(out) / "manifest.json").read_text())
    assert four["iterations_done"] == 4 and four["status"] == "done"
    assert not np.array_equal(_values(tmp_path / "i4.nii.gz"), _values(tmp_path / "i8.nii.gz"))
    assert json.loads((tmp_path / eight / "manifest.json").read_text())["iterations_done"] == 8
    assert _refine(src, tmp_path / "i4.nii.gz", "--iters", "4", work=work) == 0  # and again: reused
    again = capsys.readouterr().out
    assert "finished run of that length, reused" in again and _run_named(again) == _run_named(out), again

    assert _refine(src, tmp_path / "i12.nii.gz", "--iters", "12", work=work) == 0
    out = capsys.readouterr().out
    assert "continuing the run from iteration 8 to 12" in out and _run_named(out) == eight, out
    assert json.loads((tmp_path / eight / "manifest.json").read_text())["iterations_done"] == 12



@pytest.mark.slow
def test_other_settings_are_a_run_of_their_own(tmp_path, capsys):
    """SET= that differs from a finished run's: a new run beside it, not a refusal with advice
    (--force) that make cannot pass."""
    src, work = _scan(tmp_path / "ser.nii.gz"), tmp_path / "work"
    assert _refine(src, tmp_path / "a.nii.gz", "--iters", ITERS, work=work) == 0
    first = _run_named(capsys.readouterr().out)
    assert _refine(src, tmp_path / "b.nii.gz", "--iters", ITERS, "base_lr=0.0005", work=work) == 0, \
        capsys.readouterr().err
    out = capsys.readouterr().out
    assert "a new run of 8 iterations" in out and _run_named(out) != first, out
    assert json.loads((tmp_path / first / "manifest.json").read_text())["config"]["base_lr"] != 0.0005


# ---------------------------------------------------------------- case 7: NaN and inf kept

@pytest.mark.slow
def test_nan_and_inf_voxels_stay_where_they_were(tmp_path):
    src = _scan(tmp_path / "masked.nii.gz")
    values = _values(src).copy()
    values[:10, :, :] = np.nan  # a mask as SPM and FSL write one
    values[30, 31, 2], values[40, 12, 4] = np.inf, -np.inf
    write_nifti(src, values, THICK)
    out = tmp_path / "fine.nii.gz"
    assert _refine(src, out, "--iters", ITERS, work=tmp_path / "work") == 0
    fine = _values(out)
    expected = np.repeat(values, 3, axis=2)  # each output slice lies in one input slice
    bad = ~np.isfinite(expected)
    np.testing.assert_array_equal(~np.isfinite(fine), bad)
    np.testing.assert_array_equal(fine[bad], expected[bad])  # NaN as NaN, +inf and -inf as such


def test_restore_nonfinite_follows_the_output_geometry():
    from inference.through_plane import restore_nonfinite
    values = np.ones((2, 3, 4))
    values[1, 2, 1] = np.nan
    fine = restore_nonfinite(np.zeros((2, 3, 12)), values, 2, 3)
    assert np.flatnonzero(np.isnan(fine[1, 2])).tolist() == [3, 4, 5]
    assert np.isnan(fine).sum() == 3  # only the three output slices inside the NaN voxel


# ------------------------------------------------------------ case 9: the run's own task

@pytest.mark.slow
def test_the_run_scores_held_out_slices_thickened_along_one_axis(tmp_path, capsys):
    src, work = _scan(tmp_path / "ser.nii.gz"), tmp_path / "work"
    assert _refine(src, tmp_path / "fine.nii.gz", "--iters", ITERS, work=work) == 0
    out = capsys.readouterr().out
    run = json.loads((tmp_path / _run_named(out) / "manifest.json").read_text())
    data = next(work.glob("data/*/test_images")).parent
    images = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((data / "test_images").iterdir())]
    # the cubic along each in-plane axis in turn, scored as eval scores (8-bit, 3 px shaved)
    cubic = [psnr(to_uint8(hr), to_uint8(up), 3)
             for image in images for hr, up in (degrade(image / 255.0, a, 3, "gaussian", 3.0) for a in (0, 1))]
    assert run["bicubic"]["psnr"] == pytest.approx(np.mean(cubic), abs=1e-9)
    # held out: no training patch comes from a test image's slice
    volume01, _ = thickslice.normalised(read_scan(src))
    slices = [np.clip(np.rint(volume01[:, :, k] * 255), 0, 255).astype(np.uint8) for k in range(5)]
    held = [k for k in range(5) if any(np.array_equal(slices[k], image) for image in images)]
    assert held and len(held) == len(images)
    x, _ = slice_pairs(np.delete(volume01, held, axis=2), 2, 3, 33, 21, 6, "gaussian", 3.0)
    patches = json.loads((data / "manifest.json").read_text())["patches"]
    assert patches["train"] == len(x)
    # and the line says what it scored
    assert "held-out in-plane slices thickened x3 along one axis (gaussian profile)" in out, out


# ---------------------------------------------------------------- noise: one line, exit 2

@pytest.mark.parametrize("option,value", [("--factor", "-3"), ("--iters", "-5"), ("--iters", "x"),
                                          ("--seed", "-1")])
def test_a_bad_number_is_one_line(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exit_:
        thickslice.main(["--in", str(tmp_path / "in.nii.gz"), "--out", str(tmp_path / "o.nii.gz"),
                         option, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1 and err.startswith(f"thickslice: error: {option}") and value in err, err
