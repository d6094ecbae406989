"""inference.upscale's command line (a run directory or --model/--deploy, --force, one-line errors and
exit code 2 leaving nothing behind) and its limits: many tiles, JPEG 2000, memory.

As in tests/test_upscale_formats.py, the net is the identity net: the output must be the MATLAB
bicubic x3 of the input, rounded.
"""
import subprocess
import sys
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from inference import upscale, upscale_stream
from inference.net import SRNet
from tests.helpers import assert_rounds_to, assert_within_one_level, bicubic, make_run, rng_image

pytestmark = pytest.mark.blas  # numbers summed by OpenBLAS (tools/blas_kernels.py)

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------- CLI

def test_cli_run_directory(model, net, tmp_path):
    img = rng_image((7, 9), 256, np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), img)
    run = make_run(tmp_path, model)
    result = subprocess.run([sys.executable, "-m", "inference.upscale", "--in", str(tmp_path / "in.png"),
                             "--out", str(tmp_path / "out.png"), "--run", str(run)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("upscale: 1 slice(s) x3")
    out = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert_rounds_to(out, bicubic(img), lo=0, hi=255)


def test_cli_reference_names_the_committed_weights_by_data_set(model, tmp_path, monkeypatch, capsys):
    from core import run_files
    monkeypatch.setattr(run_files, "ROOT", tmp_path)  # where models/reference/ is looked for
    (tmp_path / "models" / "reference").mkdir(parents=True)
    make_run(tmp_path, model).rename(tmp_path / "models" / "reference" / "brain")
    img = rng_image((7, 9), 256, np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), img)
    assert upscale.main(["--in", str(tmp_path / "in.png"), "--out", str(tmp_path / "out.png"),
                         "--reference", "brain"]) == 0
    assert_rounds_to(cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED), bicubic(img), lo=0, hi=255)
    for name, hint in (("prostate", "make reference DATASET=prostate trains it"),
                       ("liver", "the data sets are brain, prostate, breast")):
        with pytest.raises(SystemExit):
            upscale.main(["--in", str(tmp_path / "in.png"), "--out", str(tmp_path / "o2.png"),
                          "--reference", name])
        assert f"no models/reference/{name}/ (there are: brain; {hint})" in capsys.readouterr().err


def test_cli_force_replaces_an_output_it_wrote_and_nothing_else(model, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "in.png"), rng_image((7, 9), 256, np.uint8))
    args = ["--in", str(tmp_path / "in.png"), "--out", str(tmp_path / "out.png"),
            "--model", str(model[1]), "--deploy", str(model[0])]
    assert upscale.main(args) == 0
    first = (tmp_path / "out.png").read_bytes()
    assert upscale.main(args) == 2 and (tmp_path / "out.png").read_bytes() == first
    assert "already exists (add --force" in capsys.readouterr().err
    cv2.imwrite(str(tmp_path / "in.png"), rng_image((8, 9), 256, np.uint8))
    assert upscale.main(args + ["--force"]) == 0
    assert cv2.imread(str(tmp_path / "out.png")).shape[:2] == (24, 27)
    (tmp_path / "out.png").write_bytes(b"old")  # the user's own file of that name
    assert upscale.main(args + ["--force"]) == 2 and (tmp_path / "out.png").read_bytes() == b"old"
    assert "carries no mark of this project (a Software tEXt chunk)" in capsys.readouterr().err


BAD_INPUTS = {"missing_model": "caffemodel not found",
              "corrupt_model": "not a Caffe model",
              "mismatched_model": "prototxt and caffemodel do not match",
              "text_file": "unsupported file format",
              "one_row_png": "slices of 1x8 pixels are 1-D",
              "one_d_nifti": "has no 2-D slices",
              "empty_nifti": "image has no pixels",
              "out_exists": "not replaced: it carries no mark of this project",
              "run_without_snapshots": "the run has no snapshot yet"}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_one_line_exit_2_no_output(case, model, tmp_path, capfd):
    deploy, caffemodel = model
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), rng_image((8, 8), 256, np.uint8))
    out = tmp_path / "out" / "sr.png"
    source = ["--model", str(caffemodel), "--deploy", str(deploy)]
    if case == "missing_model":
        source[1] = str(tmp_path / "nope.caffemodel")
    elif case == "corrupt_model":
        (tmp_path / "bad.caffemodel").write_bytes(b"\x08\x96\x01 definitely not a net" * 7)
        source[1] = str(tmp_path / "bad.caffemodel")
    elif case == "mismatched_model":
        (tmp_path / "other.prototxt").write_text(
            deploy.read_text().replace("num_output: 64", "num_output: 32"))
        source[3] = str(tmp_path / "other.prototxt")
    elif case == "text_file":
        image = tmp_path / "notes.txt"
        image.write_text("not an image\n")
    elif case == "one_row_png":
        cv2.imwrite(str(image), rng_image((1, 8), 256, np.uint8))
    elif case in ("one_d_nifti", "empty_nifti"):
        image, out = tmp_path / "in.nii", tmp_path / "out" / "sr.nii"
        shape = (5,) if case == "one_d_nifti" else (0, 4, 4)
        nib.save(nib.Nifti1Image(np.ones(shape, np.float32), np.eye(4)), str(image))
    elif case == "out_exists":
        out.parent.mkdir()
        out.write_bytes(b"keep me")
    elif case == "run_without_snapshots":
        source = ["--run", str(make_run(tmp_path, model, snapshots=False))]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    capfd.readouterr()
    code = upscale.main(["--in", str(image), "--out", str(out)] + source)
    captured = capfd.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("upscale: error: "), captured.err
    assert BAD_INPUTS[case] in lines[0]
    assert captured.out == ""
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    if case == "out_exists":
        assert out.read_bytes() == b"keep me"


def test_cli_error_from_the_command_line(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    args = ["--in", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "out.png"),
            "--model", "m", "--deploy", "d"]
    result = subprocess.run([sys.executable, "-m", "inference.upscale"] + args,
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"upscale: error: {tmp_path / 'notes.txt'}: unsupported file format "
        "(supported: DICOM, NIfTI (.nii, .nii.gz), NIfTI pair (.hdr + .img), NRRD (.nrrd, .nhdr), "
        "MetaImage (.mha, .mhd), "
        "PNG/TIFF/BMP)"]
    assert not (tmp_path / "out.png").exists()


# ------------------------------------------------- large images: tiles, JPEG 2000, limits

def test_jpeg2000_mammogram_tiled_equals_whole_and_keeps_its_tags(model, tmp_path):
    """A 12-bit JPEG 2000 MG file (ImagerPixelSpacing, no PixelSpacing) through the CLI in many
    tiles: uncompressed 12-bit output x3, spacing / 3, the pixels of one pass (to one level where
    OpenBLAS's kernels sum tiles in another order: docs/exactness.md)."""
    from tests.mammogram import SPACING, write_mammogram
    stored = write_mammogram(tmp_path / "mg.dcm", (130, 101))
    ins = pydicom.dcmread(str(tmp_path / "mg.dcm"))
    assert ins.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
    np.testing.assert_array_equal(ins.pixel_array, stored)  # 12-bit codestream decoded
    outs = {}
    for budget in ("120", "100000"):
        out = tmp_path / f"x3_{budget}.dcm"
        code = upscale.main(["--in", str(tmp_path / "mg.dcm"), "--out", str(out),
                             "--model", str(model[1]), "--deploy", str(model[0]),
                             "--memory-budget", budget])
        assert code == 0
        outs[budget] = pydicom.dcmread(str(out))
    assert len(SRNet(*model, budget_mb=120).tile_plan((390, 303))) >= 4
    new = outs["120"]
    assert_within_one_level(new.pixel_array, outs["100000"].pixel_array)
    assert (new.Rows, new.Columns) == (390, 303) and new.pixel_array.dtype == np.uint16
    assert (new.BitsStored, new.Modality) == (12, "MG") and "PixelSpacing" not in new
    assert new.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    np.testing.assert_allclose([float(v) for v in new.ImagerPixelSpacing], [SPACING / 3] * 2)
    assert_rounds_to(new.pixel_array, bicubic(stored), lo=0, hi=4095)


def test_float_values_beyond_what_the_window_can_map_are_one_line(net, tmp_path):
    """A float64 TIFF spanning -1e308..1e308: its window's width overflows to inf, which would
    send NaN through the net; refused in one line."""
    image = np.tile(np.array([-1e308, -1.0, 0.0, 1.0, 1e308]), (6, 1))
    ok, buf = cv2.imencode(".tiff", image)
    assert ok
    (tmp_path / "in.tiff").write_bytes(buf.tobytes())
    with pytest.raises(upscale.DataError, match="cannot be mapped to the net's 0..1 range"):
        upscale.upscale_path(tmp_path / "in.tiff", tmp_path / "out.tiff", net)
    assert not (tmp_path / "out.tiff").exists()


def test_an_output_larger_than_memory_is_one_line_before_any_work(net, tmp_path, monkeypatch):
    cv2.imwrite(str(tmp_path / "in.png"), rng_image((40, 30), 256, np.uint8))
    monkeypatch.setattr(upscale_stream, "_available_memory", lambda: 50_000)
    with pytest.raises(upscale.DataError, match=r"the 1x120x90 output needs 86 kB .* 50 kB is av"):
        upscale.upscale_path(tmp_path / "in.png", tmp_path / "out.png", net)
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--memory-budget", "1"], "memory budget 1 MB is too small for this net"),
    (["--memory-budget", "0"], "--memory-budget must be a positive number of MB"),
])
def test_cli_memory_budget_errors_are_one_line(model, tmp_path, capfd, args, message):
    cv2.imwrite(str(tmp_path / "in.png"), rng_image((300, 200), 256, np.uint8))
    capfd.readouterr()
    try:
        code = upscale.main(["--in", str(tmp_path / "in.png"), "--out", str(tmp_path / "o.png"),
                             "--model", str(model[1]), "--deploy", str(model[0])] + args)
    except SystemExit as exc:  # argparse
        code = exc.code
    lines = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and message in lines[-1]
    assert not (tmp_path / "o.png").exists()
