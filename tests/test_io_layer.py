"""data_prep.io: the one format table, detection, folder order, 2-D pictures, and the upscaler's
factor coming from the run (inference.upscale reads and writes only through this layer)."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from core.errors import DataError
from data_prep import io
from data_prep.io import formats, images
from data_prep.io.files import list_files, stem, to_stored
from data_prep.io.volume import Volume
from data_prep.readers import read_volume
from eval import score
from inference import upscale
from tests.helpers import make_run, ramp, write_dicom

ROOT = Path(__file__).resolve().parents[1]


def identity(x):
    return x


# ----------------------------------------------------------------------------- registry

def test_the_table_names_every_format_once_with_a_reader_and_a_writer():
    names = [f.name for f in io.FORMATS]
    assert names == ["dicom", "nifti", "nifti-pair", "nrrd", "metaimage", "image"] and len(set(names)) == len(names)
    for fmt in io.FORMATS:
        assert fmt.kind in ("dicom", "volume", "image")
        assert callable(fmt.read) and callable(fmt.write)
        assert all(ext == ext.lower() and ext.startswith(".") for ext in fmt.extensions)
        assert io.by_name(fmt.name) is fmt
    assert io.SUPPORTED == ("DICOM, NIfTI (.nii, .nii.gz), NIfTI pair (.hdr + .img), "
                            "NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd), "
                            "PNG/TIFF/BMP")


def test_one_list_of_picture_extensions_for_readers_scoring_and_upscaling():
    assert io.IMAGE_EXTS == (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
    assert io.by_name("image").extensions is io.IMAGE_EXTS


@pytest.mark.parametrize("name, content, expected", [
    ("a.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 200, "image"),
    ("a.png", b"\0" * 128 + b"DICM" + b"\0" * 8, "dicom"),      # magic beats the name
    ("a.dcm", b"BM" + b"\0" * 200, "image"),
    ("a.dcm", b"no preamble", "dicom"),
    ("IM0001", b"whatever", "dicom"),                           # DICOM is often unnamed
    ("1.2.840.10008.7", b"whatever", "dicom"),                  # or named by UID
    ("v.nii.gz", b"\x1f\x8b", "nifti"),
    ("v.NII", b"\\\x01\0\0", "nifti"),
    ("photo.jpg", b"junk", "image"),
    ("photo", b"\xff\xd8\xff\xe0junk", "image"),
    ("notes.txt", b"hello", None),
    ("empty.png", b"", "image"),
])
def test_sniff(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    assert io.sniff(path) == expected


def test_format_of_names_the_file_and_the_supported_formats(tmp_path):
    (tmp_path / "a.npy").write_bytes(b"\x93NUMPY")
    with pytest.raises(DataError, match=r"a\.npy: unsupported file format \(supported: DICOM"):
        io.format_of(tmp_path / "a.npy")


def test_list_files_natural_order_without_hidden_dicomdir_or_subfolders(tmp_path):
    for name in ["s10.dcm", "s2.dcm", "S1.dcm", "s01.dcm", ".hidden", "DICOMDIR"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    assert [p.name for p in list_files(tmp_path)] == ["S1.dcm", "s01.dcm", "s2.dcm", "s10.dcm"]
    assert list_files(tmp_path / "sub") == []


def test_stem_drops_only_a_known_extension():
    assert stem("a/1.2.3.4", (".dcm",)) == "1.2.3.4"
    assert stem("vol.NII.gz", (".nii", ".nii.gz")) == "vol"
    assert stem("x.PNG", (".png",)) == "x" and stem("x.png.bak", (".png",)) == "x.png.bak"


def test_to_stored_rounds_half_away_and_clips():
    assert to_stored([-0.5, 0.5, 1.5, 300.0], np.uint8).tolist() == [0, 1, 2, 255]
    assert to_stored([-2.5, 2.5], np.int16).tolist() == [-3, 3]
    assert to_stored([0.25], np.float32).dtype == np.float32


# ------------------------------------------------------------------------------ pictures

def test_picture_write_then_read(tmp_path):
    values = np.array([[0.4, 0.5, 1000.6], [70000.0, -3.0, 2.5]])
    images.write(tmp_path / "x.png", values, np.uint16)
    np.testing.assert_array_equal(images.read(tmp_path / "x.png"),
                                  [[0, 1, 1001], [65535, 0, 3]])
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temporary file left


def test_picture_errors_name_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png: cannot read as an image"):
        images.read(tmp_path / "bad.png")
    with pytest.raises(DataError, match=r"x\.gif: a \.gif file cannot hold uint8 pixels"):
        images.write(tmp_path / "x.gif", np.zeros((4, 4)), np.uint8)  # OpenCV has no GIF writer
    assert not (tmp_path / "x.gif").exists()


def test_jpeg_is_read_by_data_prep_and_scoring_alike(tmp_path):
    grey = ramp(lo=0, hi=255).astype(np.uint8)
    assert cv2.imwrite(str(tmp_path / "a.jpg"), grey)
    slices, info = read_volume(tmp_path / "a.jpg")
    (name, scored), = score.load_hr_folder(tmp_path)
    assert info["format"] == "image" and slices[0].name == name == "a"
    np.testing.assert_array_equal(slices[0].image, scored)  # 8-bit: the "none" rule


# ------------------------------------------------------------------- one more format

def toy_read(path):
    data = np.load(path)
    return Volume(data, np.diag([1.0, 2.0, 3.0, 1.0]), data.dtype, (1.0, 0.0), None)


def toy_write(path, like, values, planes, scale):
    with open(path, "wb") as f:
        np.save(f, values.astype(like.stored))


def test_a_new_format_is_one_table_row(tmp_path, monkeypatch):
    """A format added to the table alone is read by data_prep and written by the upscaler."""
    toy = formats.Format("toy", "volume", "toy", "toy (.toy)", (".toy",), (), toy_read, toy_write)
    monkeypatch.setattr(formats, "FORMATS", formats.FORMATS + (toy,))
    data = np.random.RandomState(0).randint(0, 256, (4, 5, 6)).astype(np.uint8)
    with open(tmp_path / "v.toy", "wb") as f:
        np.save(f, data)
    slices, info = read_volume(tmp_path / "v.toy", axis=2)
    assert info["format"] == "toy" and len(slices) == 6 and slices[0].name == "v_z0000"
    assert info["pixel_spacing"] == [2.0, 1.0] and info["slice_spacing"] == 3.0
    result = upscale.upscale_path(tmp_path / "v.toy", tmp_path / "up.toy", identity, scale=2)
    assert result["format"] == "toy" and np.load(tmp_path / "up.toy").shape == (8, 10, 6)


# --------------------------------------------------------------------- upscale: factor

def with_config(run, config):
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"] = config
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_the_factor_comes_from_the_run(tmp_path, model):
    run = make_run(tmp_path, model)
    assert upscale.resolve_run(run)[2] == 3  # a manifest without a config: the paper's 3
    assert upscale.resolve_run(with_config(run, {"scale": 2}))[2] == 2
    assert upscale.resolve_run(None, model[1], model[0]) == (model[0], model[1], 3)
    with pytest.raises(DataError, match="config scale 'x' is not a positive integer"):
        upscale.resolve_run(with_config(run, {"scale": "x"}))


def test_cli_upscales_by_the_run_s_factor(tmp_path, model):
    img = np.random.RandomState(3).randint(0, 256, (7, 9)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), img)
    run = with_config(make_run(tmp_path, model), {"scale": 2})
    result = subprocess.run([sys.executable, "-m", "inference.upscale", "--in", str(tmp_path / "in.png"),
                             "--out", str(tmp_path / "out.png"), "--run", str(run)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("upscale: 1 slice(s) x2")
    assert cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED).shape == (14, 18)


def test_dicom_geometry_follows_the_factor(tmp_path):
    write_dicom(tmp_path / "in.dcm", ramp((6, 8)), position=(0, 0, 0))
    upscale.upscale_path(tmp_path / "in.dcm", tmp_path / "out.dcm", identity, scale=2)
    out = pydicom.dcmread(str(tmp_path / "out.dcm"))
    assert (out.Rows, out.Columns) == (12, 16)
    np.testing.assert_allclose([float(v) for v in out.PixelSpacing], [0.25, 0.375])
    np.testing.assert_allclose([float(v) for v in out.ImagePositionPatient],
                               [-0.375 / 2, -0.25 / 2, 0])  # moved by 0.5 / 2 - 0.5 old pixels
    assert out.DerivationDescription.startswith("SRCNN x2 super-resolution")
