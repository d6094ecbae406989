"""Whole study trees upscaled (issue 33, deliverable 4): ``inference.upscale --series REGEX`` upscales
every matching series of a tree of several patients (tools/synth_cohort.py: decoys, a file cut
short, junk) into a tree that mirrors it; one broken series is named in the summary and the others
are done (exit 2); a rerun skips the finished series; FORCE replaces only marked outputs.

The net is the identity net (tests/conftest.py), as in tests/test_upscale_cli.py.
"""
import json
import shutil
from pathlib import Path

import caffe
import nibabel as nib
import numpy as np
import pydicom
import pytest

from inference import upscale
from data_prep.sources import PROSTATE_STUDY as STUDY
from tests.helpers import make, make_run
from tools.synth_cohort import write_cohort

pytestmark = pytest.mark.blas  # numbers summed by OpenBLAS (tools/blas_kernels.py)

PATIENTS = ["SYN-0001", "SYN-0002", "SYN-0003"]
DATE = "01-01-2020 MR prostate"
T2, TFL = "1.000000-t2 tse tra-1117", "4.000000-tfl 3d PD ref tra-4468"
RECORD = "upscale-tree.json"  # inference.upscale_tree.RECORD


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Three patients; SYN-0002's T2 series is broken: one slice of another size."""
    root = tmp_path_factory.mktemp("trees") / "study tree"
    assert write_cohort(root, len(PATIENTS), seed=3, crop=32) == PATIENTS
    break_series(root / "SYN-0002" / DATE / T2)
    return root


def break_series(folder):
    """One file of the series made a slice of another size (a 32 x 30 slice among 32 x 32)."""
    path = folder / "1-05.dcm"
    ds = pydicom.dcmread(str(path))
    ds.PixelData = np.ascontiguousarray(ds.pixel_array[:, :30]).tobytes()
    ds.Columns = 30
    ds.save_as(str(path))


def run(tree, out, model, *extra, series="t2|tfl|diff"):
    args = ["--in", str(tree), "--out", str(out), "--model", str(model[1]),
            "--deploy", str(model[0])]
    return upscale.main(args + (["--series", series] if series is not None else []) + list(extra))


def stats(folder):
    """{file: (inode, mtime_ns)} of every file under ``folder``: what a rewrite changes."""
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.name != RECORD}


def test_every_matching_series_is_upscaled_and_a_broken_one_is_named(tree, model, tmp_path,
                                                                      capsys):
    out = tmp_path / "out"
    assert run(tree, out, model) == 2  # a series failed, for its data: as upscale alone says
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("upscale: 6 series: 5 upscaled x3, 0 skipped (finished before), "
                               "1 failed; 6 series and 2 file(s) left out")
    (failed,) = [line for line in lines if "FAILED" in line]
    assert f"SYN-0002/{DATE}/{T2}" in failed and "1-05.dcm" in failed
    assert "1 of 6 series failed" in captured.err
    # the others are done, in a tree that mirrors the input, file names kept
    for patient in PATIENTS:
        for series, count in ((T2, 19), (TFL, 4)):
            done = out / patient / DATE / series
            if (patient, series) == ("SYN-0002", T2):
                assert not done.exists()  # nothing half-written
                continue
            names = sorted(p.name for p in done.iterdir())
            assert names == sorted(p.name for p in (tree / patient / DATE / series).iterdir()
                                   if p.name != "1-99.dcm")  # the file cut short
            assert len(names) == count
            assert pydicom.dcmread(str(done / names[0])).Rows == 96
    # left out with why, not failures: the localizer, the diffusion series, the two bad files
    left = [line for line in lines if line.startswith("  left out  ")]  # alike ones together
    assert len(left) == 2
    assert "3 series 't2_localizer' of 3 patient(s): its slices have 3 orientations" in left[0]
    assert "3 series 'ep2d_diff_tra' of 3 patient(s): it holds up to 3 images at one " \
        "position" in left[1]
    files = [line for line in lines if line.startswith("  left out file")]
    assert any("1-99.dcm: pixel data cut short" in f for f in files)
    assert any("junk.dcm: not a DICOM file" in f for f in files)
    record = json.loads((out / RECORD).read_text())
    assert len(record["series"]) == 5 and len(record["last_run"]["failed"]) == 1


def test_a_rerun_skips_the_finished_series_and_does_the_rest(tree, model, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(tree, src)
    assert run(src, out, model) == 2
    before = stats(out)
    capsys.readouterr()
    assert run(src, out, model) == 2  # the broken series fails again; no other is rewritten
    assert stats(out) == before
    skipped = "6 series: 0 upscaled x3, 5 skipped (finished before), 1 failed"
    assert skipped in capsys.readouterr().out
    (src / "SYN-0002" / DATE / T2 / "1-05.dcm").unlink()  # the user mends the broken series
    assert run(src, out, model) == 0
    after = stats(out)
    new = {k for k in after if k not in before}
    assert new == {f"SYN-0002/{DATE}/{T2}/1-{k:02d}.dcm" for k in range(1, 20) if k != 5}
    assert {k: after[k] for k in before} == before
    assert "6 series: 1 upscaled x3, 5 skipped" in capsys.readouterr().out


def test_the_output_of_a_series_is_that_of_upscale_on_it_alone(tree, model, tmp_path):
    assert run(tree, tmp_path / "out", model, series="t2_tse") == 2
    alone = tmp_path / "alone"
    assert run(tree / "SYN-0003" / DATE / T2, alone, model, series=None) == 0
    mirrored = tmp_path / "out" / "SYN-0003" / DATE / T2
    assert sorted(p.name for p in mirrored.iterdir()) == sorted(p.name for p in alone.iterdir())
    # New UIDs and the time of writing (data_prep.io.dicom_derived) differ between two commands.
    differ = {"SOPInstanceUID", "SeriesInstanceUID", "MediaStorageSOPInstanceUID",
              "InstanceCreationDate", "InstanceCreationTime"}
    for path in alone.iterdir():
        a, b = pydicom.dcmread(str(path)), pydicom.dcmread(str(mirrored / path.name))
        for ds in (a, b):
            del ds.ContributingEquipmentSequence[-1].ContributionDateTime
        np.testing.assert_array_equal(a.pixel_array, b.pixel_array)
        keys = {e.keyword for e in a if e.keyword} - differ
        assert keys == {e.keyword for e in b if e.keyword} - differ
        assert all(a[k].value == b[k].value for k in keys), path.name


def test_several_series_in_one_folder_and_volumes_get_outputs_that_cannot_meet(tree, model,
                                                                                tmp_path):
    """A folder of two series: one folder per SeriesInstanceUID in its mirror; a volume: its own
    path; DICOM files directly in --in: a folder per series under --out."""
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "flat").mkdir(parents=True)
    uids = {}
    for patient, folder in (("SYN-0003", src / "flat"), ("SYN-0001", src)):
        for series in (T2, TFL):
            files = sorted((tree / patient / DATE / series).iterdir())
            uid = str(pydicom.dcmread(str(files[0])).SeriesInstanceUID)
            uids.setdefault(folder, []).append(uid)
            for k, path in enumerate(files[:4]):
                shutil.copy(path, folder / f"{series[:2]}{k}.dcm")
    (src / "vols").mkdir()
    nib.save(nib.Nifti1Image(np.arange(60, dtype=np.float32).reshape(5, 4, 3), np.eye(4)),
             str(src / "vols" / "v.nii.gz"))
    assert run(src, out, model, series=".") == 0
    for folder, there in ((src / "flat", out / "flat"), (src, out)):
        for uid, series in zip(uids[folder], (T2, TFL)):
            assert sorted(p.name for p in (there / uid).iterdir()) == \
                [f"{series[:2]}{k}.dcm" for k in range(4)]
    assert nib.load(str(out / "vols" / "v.nii.gz")).shape == (15, 12, 3)
    assert sorted(p.name for p in out.iterdir()) == sorted(uids[src] + ["flat", "vols", RECORD])


def test_force_replaces_only_marked_outputs_of_another_net(tree, model, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(tree / "SYN-0003", src / "SYN-0003")
    assert run(src, out, model) == 0
    other = other_net(model, tmp_path)
    before = stats(out)
    capsys.readouterr()
    assert run(src, out, other) == 2  # another net: not finished, and in the way
    err = capsys.readouterr().err
    assert "already exists (add --force" in err and "nothing was written" in err
    assert stats(out) == before
    mine = out / "SYN-0003" / DATE / TFL
    for path in mine.iterdir():
        path.write_bytes(b"the user's own")  # no longer this project's output
    kept = stats(out)
    assert run(src, out, other, "--force") == 2
    assert "carries no mark of this project" in capsys.readouterr().err
    assert stats(out) == kept and all(p.read_bytes() == b"the user's own" for p in mine.iterdir())
    shutil.rmtree(mine)
    assert run(src, out, other, "--force") == 0
    after = stats(out)
    assert all(after[k] != before[k] for k in before)  # every marked output replaced


def other_net(model, tmp_path):
    """The identity net with another bias: other weights, another net id."""
    net = caffe.Net(str(model[0]), str(model[1]), caffe.TEST)
    last = list(net.params)[-1]
    net.params[last][1].data[...] += 1e-3
    path = tmp_path / "other.caffemodel"
    net.save(str(path))
    return model[0], path


def test_out_must_be_new_empty_or_a_tree_it_wrote(tree, model, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert run(tree, out, model) == 2
    assert "is not a tree this project upscaled into" in capsys.readouterr().err
    assert run(tree, tree / "SYN-0001" / "x3", model) == 2
    assert "--out lies inside the input" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert not (tree / "SYN-0001" / "x3").exists()


def test_a_tree_without_series_is_refused_and_a_series_folder_works_as_before(tree, model,
                                                                               tmp_path, capsys):
    assert run(tree, tmp_path / "out", model, series=None) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a folder of folders (a study tree?): give --series" in err
    assert not (tmp_path / "out").exists()
    assert run(tree / "SYN-0003" / DATE / T2, tmp_path / "one", model, series=None) == 0
    assert len(list((tmp_path / "one").iterdir())) == 19


def test_the_prostatex_study_gives_its_two_t2_axial_series(tmp_path):
    import re

    from inference.upscale_tree import find_tree_series, plan_jobs
    used, left, _ = find_tree_series(STUDY, re.compile("t2_tse_tra", re.IGNORECASE))
    assert [s.description for s in used] == ["t2_tse_tra", "t2_tse_tra"]
    assert len(left) == 9
    jobs = plan_jobs(STUDY, tmp_path, used, left)
    assert sorted(j.out.name for j in jobs) == ["10.000000-t2tsetra-17541",
                                                "6.000000-t2tsetra-76610"]


@pytest.mark.slow
def test_make_upscale_takes_a_tree_with_series(tree, model, tmp_path):
    run_dir = make_run(tmp_path, model)
    done = make("upscale", f"IN={tree}", f"OUT={tmp_path / 'out'}", "SERIES=t2_tse",
                f"RUN={run_dir}")
    assert done.returncode == 2, done.stderr
    assert "3 series: 2 upscaled x3, 0 skipped (finished before), 1 failed" in done.stdout
    assert "1 of 3 series failed" in done.stderr
    assert (tmp_path / "out" / "SYN-0001" / DATE / T2).is_dir()


def test_a_folder_of_several_series_without_series_names_the_option(tree, model, tmp_path, capsys):
    src = tmp_path / "flat"
    src.mkdir()
    for series in (T2, TFL):
        for path in sorted((tree / "SYN-0003" / DATE / series).iterdir())[:2]:
            shutil.copy(path, src / f"{series[:2]}-{path.name}")
    assert run(src, tmp_path / "out", model, series=None) == 2
    assert "holds 2 DICOM series; give a folder with one series, or --series REGEX" in \
        capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_progress_bar_is_over_series_on_a_terminal_only(tree, model, tmp_path, monkeypatch):
    from inference import upscale_tree
    bars = []

    def bar(items, **kwargs):
        bars.append(kwargs)
        return items
    monkeypatch.setattr(upscale_tree, "tqdm", bar)
    assert run(tree / "SYN-0003", tmp_path / "out", model, series="tfl") == 0
    assert bars == [{"desc": "series", "unit": "series", "disable": None}]


def test_a_full_disk_stops_the_run_in_one_line_and_a_rerun_goes_on(tree, model, tmp_path,
                                                                    monkeypatch, capsys):
    """A file system error stops every series alike: exit 1 at once, one line; the series
    finished before it are recorded, and the rerun skips them."""
    import errno

    from inference import upscale_formats
    real, calls = upscale_formats.upscale_series_files, []

    def fills_up(paths, dst, net, scale):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(paths, dst, net, scale)
    monkeypatch.setattr(upscale_formats, "upscale_series_files", fills_up)
    src, out = tree / "SYN-0003", tmp_path / "out"
    assert run(src, out, model, series="t2_tse|tfl") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"upscale: error: cannot write {calls[1]}: No space left on device; the series "
                   "finished so far are kept (a rerun skips them)"]
    assert calls[0].is_dir() and not calls[1].exists()
    monkeypatch.setattr(upscale_formats, "upscale_series_files", real)
    assert run(src, out, model, series="t2_tse|tfl") == 0
    assert "2 series: 1 upscaled x3, 1 skipped (finished before)" in capsys.readouterr().out


def test_a_nifti_pair_in_a_tree_is_one_series(model, tmp_path, capsys):
    """The walk sees a .hdr and its .img: one volume, named by its header, written as a pair."""
    (tmp_path / "in" / "vols").mkdir(parents=True)
    data = np.arange(48, dtype=np.float32).reshape(4, 4, 3)
    nib.save(nib.Nifti1Pair(data, np.eye(4)), str(tmp_path / "in" / "vols" / "p.hdr"))
    assert run(tmp_path / "in", tmp_path / "out", model, series=".") == 0
    assert capsys.readouterr().out.startswith("upscale: 1 series: 1 upscaled x3, 0 skipped "
                                              "(finished before), 0 failed; 0 series and 0 file(s)")
    assert sorted(p.name for p in (tmp_path / "out" / "vols").iterdir()) == ["p.hdr", "p.img"]
    assert nib.load(str(tmp_path / "out" / "vols" / "p.hdr")).shape == (12, 12, 3)
