"""FORCE replaces only what the project wrote (issue #32, cases 1, 2 and 8): an output it recognises
by its mark (core.outputs, data_prep.io.marks), never the input, a folder that holds it, a run
folder or a file of one, or anything else; each refusal is one line and leaves everything as it
was. For inference.upscale, tools.thickslice (through inference.upscale.check_io), inference.export, eval's
tables and REPORT.md; and the marks themselves, per format."""
import json
import os
import signal
import subprocess
import sys

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from core import atomic
from core.config import ROOT
from core.errors import DataError
from data_prep.io import format_of
from inference import upscale
from eval.__main__ import main as eval_main
from inference.export import main as export_main
from eval.report import main as report_main
from tests.helpers import (clean_env, eval_tables, make, make_run, rng_image, scorable_run, write_dicom,
                           write_nifti)


def snapshot(folder):
    """{relative path: bytes (None for a folder)} of everything under ``folder``."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
            for p in sorted(folder.rglob("*"))}


def one_line(capfd, prog):
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error: "), err
    return err[0]


def series(folder, count=5, side=12):
    """A DICOM series of ``count`` square-pixel slices 3 mm apart (a thick-slice scan)."""
    folder.mkdir(parents=True)
    uid = generate_uid()
    for k in range(count):
        path = folder / f"IM{k}.dcm"
        write_dicom(path, rng_image((side, side), 1000, np.uint16, seed=k), instance=k + 1,
                    position=(0, 0, 3.0 * k), series=uid)
        ds = pydicom.dcmread(str(path))
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 3.0
        ds.save_as(str(path))
    return folder


@pytest.fixture
def scan_folder(tmp_path):
    """The issue's /tmp/v: a DICOM series (one thickslice can train on) and the user's
    report.txt beside it."""
    v = tmp_path / "v"
    series(v / "series", side=48)
    (v / "report.txt").write_text("precious\n")
    return v


def model_args(model):
    return ["--model", str(model[1]), "--deploy", str(model[0])]


# --------------------------------------------------------------------------- inference.upscale

def test_upscale_force_never_replaces_a_folder_that_holds_the_input(model, scan_folder, capfd):
    """Case 1: OUT=/tmp/v FORCE=1 for IN=/tmp/v/series deleted the series and report.txt."""
    before = snapshot(scan_folder)
    code = upscale.main(["--in", str(scan_folder / "series"), "--out", str(scan_folder), "--force",
                         *model_args(model)])
    assert code == 2
    assert "it holds the input" in one_line(capfd, "upscale")
    assert snapshot(scan_folder) == before


def test_upscale_force_never_replaces_an_ancestor_of_the_input(model, tmp_path, capfd):
    src = series(tmp_path / "a" / "b" / "series")
    before = snapshot(tmp_path)
    assert upscale.main(["--in", str(src), "--out", str(tmp_path / "a"), "--force",
                         *model_args(model)]) == 2
    assert f"it holds the input {src}" in one_line(capfd, "upscale")
    assert snapshot(tmp_path) == before


def test_upscale_force_replaces_its_own_series_folder_and_nothing_else(model, tmp_path, capfd):
    src, out = series(tmp_path / "series", count=2), tmp_path / "sr"
    args = ["--in", str(src), "--out", str(out), *model_args(model)]
    assert upscale.main(args) == 0
    assert upscale.main(args + ["--force"]) == 0  # its own output: replaced
    assert sorted(p.name for p in out.iterdir()) == ["IM0.dcm", "IM1.dcm"]
    capfd.readouterr()
    (out / "notes.txt").write_text("mine")  # the user's file in it: the folder is theirs now
    before = snapshot(tmp_path)
    assert upscale.main(args + ["--force"]) == 2
    assert "it holds notes.txt, which carries no mark of this project" in one_line(capfd, "upscale")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("what", ["unrelated", "run", "other_series"])
def test_upscale_force_refuses_a_folder_it_did_not_write(model, tmp_path, capfd, what):
    src = series(tmp_path / "series", count=2)
    if what == "unrelated":
        out = tmp_path / "photos"
        out.mkdir()
        (out / "holiday.dcm").write_bytes(b"not even DICOM")
        says = "it holds holiday.dcm, which carries no mark"
    elif what == "run":
        out = make_run(tmp_path, model)
        says = "it is a run or data set folder (it holds manifest.json)"
    else:  # a DICOM series of the user's, whatever its files are called
        out = series(tmp_path / "theirs", count=2)
        says = "it holds IM0.dcm, which carries no mark"
    before = snapshot(tmp_path)
    assert upscale.main(["--in", str(src), "--out", str(out), "--force", *model_args(model)]) == 2
    assert says in one_line(capfd, "upscale")
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_make_upscale_force_keeps_the_input_and_the_report(model, scan_folder):
    """Case 1 as the issue ran it, through make."""
    run = make_run(scan_folder.parent, model)
    before = snapshot(scan_folder)
    done = make("-s", "upscale", f"IN={scan_folder / 'series'}", f"OUT={scan_folder}", "FORCE=1",
                f"RUN={run}")
    assert done.returncode != 0 and "it holds the input" in done.stderr, done.stderr
    assert snapshot(scan_folder) == before


def test_check_io_refuses_what_the_project_did_not_write(tmp_path):
    """The one guard (tools.thickslice calls it): a user's file, with or without force."""
    src = write_nifti(tmp_path / "in.nii.gz", np.ones((6, 6, 4), np.float32))
    (tmp_path / "out.nii.gz").write_bytes(b"someone's volume")
    for force in (False, True):
        with pytest.raises(DataError, match="not replaced: it carries no mark of this project"):
            upscale.check_io(src, tmp_path / "out.nii.gz", force)
    assert (tmp_path / "out.nii.gz").read_bytes() == b"someone's volume"


# ------------------------------------------------------------------------ tools.thickslice

@pytest.mark.parametrize("target", ["parent", "unrelated"])
def test_thickslice_force_never_replaces_the_input_s_folder_or_an_unrelated_one(scan_folder, tmp_path,
                                                                               capfd, target):
    """Case 1 for make thickslice, which replaced unrelated folders too; refused by check_io
    before any work (no work folder either)."""
    from tools import thickslice
    out = scan_folder
    if target == "unrelated":
        out = tmp_path / "papers"
        out.mkdir()
        (out / "draft.txt").write_text("mine")
    before = snapshot(tmp_path)
    code = thickslice.main(["--in", str(scan_folder / "series"), "--out", str(out), "--force",
                            "--iters", "2", "--work", str(tmp_path / "work")])
    assert code == 2
    line = one_line(capfd, "thickslice")
    assert ("it holds the input" if target == "parent" else "it holds draft.txt") in line
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- inference.export

@pytest.mark.parametrize("target", ["snapshots/srcnn_iter_20.caffemodel", "manifest.json", "deploy.prototxt"])
def test_export_force_never_writes_over_a_file_of_the_run(model, tmp_path, capfd, target):
    """Case 2: OUT=<run>/snapshots/srcnn_iter_50.caffemodel FORCE=1 wrote ONNX over the weights."""
    run = make_run(tmp_path, model)
    before = snapshot(tmp_path)
    assert export_main(["--run", str(run), "--out", str(run / target), "--force"]) == 2
    assert f"{run / target}: not replaced: it is the input" in one_line(capfd, "export")
    assert snapshot(tmp_path) == before


def test_export_force_refuses_a_file_it_did_not_write(model, tmp_path, capfd):
    run = make_run(tmp_path, model)
    (tmp_path / "net.onnx").write_bytes(b"\x08\x07someone else's model")
    (run / "notes.onnx").write_bytes(b"\x08\x07")
    for out, says in ((tmp_path / "net.onnx", "it carries no mark of this project (the ONNX producer name"),
                      (run / "notes.onnx", f"it lies in the run or data set folder {run}")):
        before = snapshot(tmp_path)
        assert export_main(["--run", str(run), "--out", str(out), "--force"]) == 2
        assert says in one_line(capfd, "export")
        assert snapshot(tmp_path) == before


def test_export_force_replaces_its_own_file_in_the_run_folder(model, tmp_path):
    """docs/onnx.md's make export REFERENCE=<d> OUT=models/reference/<d>/model.onnx FORCE=1."""
    run = make_run(tmp_path, model)
    assert export_main(["--run", str(run), "--out", str(run / "model.onnx")]) == 0
    assert export_main(["--run", str(run), "--out", str(run / "model.onnx"), "--force"]) == 0


@pytest.mark.parametrize("program", ["export", "upscale"])
def test_a_run_and_a_reference_together_are_one_line(model, tmp_path, capfd, program):
    """Case 8, the programs' side: both given is refused in one line (make passes both: below)."""
    run = make_run(tmp_path, model)
    main = {"export": export_main, "upscale": upscale.main}[program]
    args = {"export": ["--out", str(tmp_path / "x.onnx")],
            "upscale": ["--in", str(tmp_path / "x.png"), "--out", str(tmp_path / "y.png")]}[program]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--reference", "prostate", "--run", str(run)])
    assert exit_.value.code == 2
    assert "argument --run: not allowed with argument --reference" in one_line(capfd, program)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["export", "upscale"])
def test_make_with_a_run_and_a_reference_is_one_line_and_writes_nothing(model, tmp_path, target):
    """Case 8: make export REFERENCE=prostate RUN=<run> exported the reference, silent on RUN."""
    run = make_run(tmp_path, model)
    cv2.imwrite(str(tmp_path / "in.png"), rng_image((8, 8), 256, np.uint8))
    names = {"export": ["OUT=" + str(tmp_path / "x.onnx")],
             "upscale": [f"IN={tmp_path / 'in.png'}", f"OUT={tmp_path / 'out.png'}"]}[target]
    before = snapshot(tmp_path)
    done = make("-s", target, "REFERENCE=prostate", f"RUN={run}", *names)
    err = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(err) <= 2, done.stderr  # make adds its own "Error 2" line
    assert err[0] == f"{target}: error: argument --run: not allowed with argument --reference", err
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------- eval's tables

@pytest.fixture
def scored(model, tmp_path):
    return scorable_run(tmp_path, model, 40)


@pytest.mark.parametrize("kind", ["json", "csv", "md"])
def test_eval_replaces_only_its_own_tables(scored, tmp_path, capfd, kind):
    hr, run = scored
    out = tmp_path / "out"
    out.mkdir()
    args = ["--hr", str(hr), "--runs", str(run), *eval_tables(out)]
    assert eval_main(args) == 0
    assert eval_main(args) == 0  # its own tables: replaced, as make eval does each time
    capfd.readouterr()
    (out / f"r.{kind}").write_text("the user's own notes\n")
    before = snapshot(tmp_path)
    assert eval_main(args) == 2
    assert f"r.{kind}: not replaced: it is not a table that eval wrote" in one_line(capfd, "eval")
    assert snapshot(tmp_path) == before


def test_eval_s_default_tables_replace_only_its_own(scored, tmp_path, capfd, monkeypatch):
    """results/<name>.* by default: a file of that name that eval did not write is kept."""
    import eval.__main__ as cli
    monkeypatch.setattr(cli, "ROOT", tmp_path)
    hr, run = scored
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "hr.md").write_text("# my write-up\n")
    assert eval_main(["--hr", str(hr), "--runs", str(run)]) == 2
    assert "hr.md: not replaced" in one_line(capfd, "eval")
    assert sorted(os.listdir(tmp_path / "results")) == ["hr.md"]
    (tmp_path / "results" / "hr.md").unlink()
    assert eval_main(["--hr", str(hr), "--runs", str(run)]) == 0
    table = json.loads((tmp_path / "results" / "hr.json").read_text())
    assert table["producer"] == "medsr-caffe eval" and "bicubic" in table["methods"]


def test_a_report_replaces_only_a_report(tmp_path, capfd):
    out = tmp_path / "REPORT.md"
    out.write_text("# My own notes\n")
    assert report_main(["--out", str(out)]) == 2
    assert "not a report that eval.report wrote" in one_line(capfd, "report")
    assert out.read_text() == "# My own notes\n"


# ------------------------------------------------------------------------------- the marks

def test_every_written_format_carries_its_mark_and_a_copy_of_another_s_file_does_not(net, tmp_path):
    from data_prep.io import marks
    cv2.imwrite(str(tmp_path / "in.png"), rng_image((6, 7), 256, np.uint8))
    cv2.imwrite(str(tmp_path / "in.tif"), rng_image((6, 7), 4000, np.uint16))
    data = rng_image((6, 7, 3), 1000, np.int16)
    write_nifti(tmp_path / "in.nii.gz", data)
    nib.save(nib.Nifti1Pair(data, np.eye(4)), str(tmp_path / "in.hdr"))
    import SimpleITK as sitk
    for name in ("in.nrrd", "in.mha"):
        sitk.WriteImage(sitk.GetImageFromArray(data.T.copy()), str(tmp_path / name))
    write_dicom(tmp_path / "in.dcm", rng_image((6, 7), 1000, np.uint16))
    for name in ("in.png", "in.tif", "in.nii.gz", "in.hdr", "in.nrrd", "in.mha", "in.dcm"):
        src, out = tmp_path / name, tmp_path / name.replace("in.", "out.")
        fmt = format_of(src)
        assert marks.file_refusal(fmt.name, src) is not None, name  # not written here
        upscale.upscale_path(src, out, net)
        assert marks.file_refusal(fmt.name, out) is None, name
        upscale.upscale_path(src, out, net, force=True)  # its own: replaced
        assert fmt.read(out) is not None  # and still a file of its format


def test_a_bmp_has_no_room_for_a_mark_and_is_never_replaced(net, tmp_path):
    cv2.imwrite(str(tmp_path / "in.bmp"), rng_image((6, 7), 256, np.uint8))
    upscale.upscale_path(tmp_path / "in.bmp", tmp_path / "out.bmp", net)
    with pytest.raises(DataError, match="a BMP file, which has no field for this project's mark"):
        upscale.upscale_path(tmp_path / "in.bmp", tmp_path / "out.bmp", net, force=True)


def test_the_dicom_mark_survives_what_a_user_may_change(net, tmp_path):
    """The mark is this project's Contributing Equipment item: ImageType, SeriesDescription or
    DerivationDescription may change without touching it; a later tool's item after ours means
    the file is that tool's, not ours."""
    from data_prep.io import marks
    write_dicom(tmp_path / "in.dcm", rng_image((6, 7), 1000, np.uint16))
    upscale.upscale_path(tmp_path / "in.dcm", tmp_path / "out.dcm", net)
    ds = pydicom.dcmread(str(tmp_path / "out.dcm"))
    ds.ImageType, ds.SeriesDescription = ["DERIVED", "SECONDARY"], "x3"
    ds.DerivationDescription = "something else"
    ds.save_as(str(tmp_path / "out.dcm"))
    assert marks.file_refusal("dicom", tmp_path / "out.dcm") is None
    assert ds.ContributingEquipmentSequence[-1].Manufacturer == "medsr-caffe"
    later = pydicom.Dataset()
    later.Manufacturer = "another tool"
    ds.ContributingEquipmentSequence.append(later)
    ds.save_as(str(tmp_path / "out.dcm"))
    assert marks.file_refusal("dicom", tmp_path / "out.dcm") is not None


def test_an_output_of_an_earlier_version_is_still_ours_and_its_old_mark_is_not_copied(
        net, tmp_path):
    """Earlier versions marked a private element (0009,xx01) under creator medsr-caffe: such a
    file is still recognised, and upscaling it writes no private element (validators flag it)."""
    from data_prep.io import marks
    write_dicom(tmp_path / "old.dcm", rng_image((6, 7), 1000, np.uint16))
    ds = pydicom.dcmread(str(tmp_path / "old.dcm"))
    ds.private_block(0x0009, "medsr-caffe", create=True).add_new(0x01, "LO", "medsr-caffe upscale")
    ds.save_as(str(tmp_path / "old.dcm"))
    assert marks.file_refusal("dicom", tmp_path / "old.dcm") is None
    upscale.upscale_path(tmp_path / "old.dcm", tmp_path / "out.dcm", net)
    out = pydicom.dcmread(str(tmp_path / "out.dcm"))
    assert not [t for t in out.keys() if t.group == 0x0009]


# ---------------------------------------------------------------- stale temporaries

def test_the_next_write_removes_a_killed_process_s_temporaries_only(tmp_path):
    """A SIGKILL leaves a temporary nobody removes: the next write of the same name removes it
    when its process is gone, and leaves a living process's and another machine's."""
    def killed_in(dest):
        killed = subprocess.run([sys.executable, "-c", (
            "import os, signal\n"
            "from core.atomic import atomic_dir\n"
            f"with atomic_dir({str(dest)!r}) as tmp:\n"
            "    (tmp / 'a.dcm').write_text('half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")], cwd=ROOT, env=clean_env())
        assert killed.returncode == -signal.SIGKILL
        left = [p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}.")]
        assert len(left) == 1 and left[0].endswith(".tmp")

    killed_in(tmp_path / "out")
    with atomic.atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a.dcm").write_text("whole")
    assert os.listdir(tmp_path) == ["out"]
    alive = subprocess.Popen(["sleep", "60"])
    try:
        living = tmp_path / f".again.{alive.pid}.{atomic._HOST}-0000abcd.tmp"
        elsewhere = tmp_path / f".again.{alive.pid + 1}.ffffffff-0000abcd.tmp"
        living.mkdir(), elsewhere.mkdir()
        with atomic.atomic_dir(tmp_path / "again") as tmp:
            (tmp / "a.dcm").write_text("whole")
        assert sorted(os.listdir(tmp_path)) == sorted([living.name, elsewhere.name, "again", "out"])
    finally:
        alive.kill()
        alive.wait()
