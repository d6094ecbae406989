"""NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd): read for data_prep --input and inference.upscale,
written back x3 with the geometry moved as for NIfTI (in-plane spacing / 3, origin on the new
first voxel centre, direction kept), on small volumes made here with SimpleITK itself."""
import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from core.errors import DataError
from data_prep import io
from data_prep.io import itk
from data_prep.readers import read_volume
from inference import upscale
from tests.helpers import assert_rounds_to, bicubic, rng_image

EXTENSIONS = (".nrrd", ".nhdr", ".mha", ".mhd")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def oblique_direction():
    c, s = np.cos(0.4), np.sin(0.4)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def write_itk(path, data_xyz, spacing=(0.8, 1.1, 2.5), origin=(-30.0, 12.0, 5.0),
              direction=None, compress=True, extra=None):
    """``data_xyz`` (x, y, z voxel order) as ITK writes it, geometry in LPS."""
    image = sitk.GetImageFromArray(np.asarray(data_xyz).T)
    dim = image.GetDimension()
    image.SetSpacing(spacing[:dim])
    image.SetOrigin(origin[:dim])
    direction = oblique_direction() if direction is None else direction
    image.SetDirection(tuple(np.asarray(direction)[:dim, :dim].ravel()))
    for key, value in (extra or {}).items():
        image.SetMetaData(key, value)
    sitk.WriteImage(image, str(path), compress)
    return image


def index_to_lps(image, index):
    return np.array(image.TransformContinuousIndexToPhysicalPoint([float(i) for i in index]))


# ------------------------------------------------------------------------------ reading

@pytest.mark.parametrize("ext", EXTENSIONS)
def test_read_gives_values_in_voxel_order_and_the_ras_affine(tmp_path, ext):
    data = rng_image((5, 6, 4), 3000, np.int16) - 1000
    image = write_itk(tmp_path / f"v{ext}", data)
    fmt = io.format_of(tmp_path / f"v{ext}")
    assert fmt.kind == "volume"
    assert fmt.name == ("nrrd" if ext in (".nrrd", ".nhdr") else "metaimage")
    vol = fmt.read(tmp_path / f"v{ext}")
    np.testing.assert_array_equal(vol.values, data)
    assert vol.stored == np.int16 and vol.scaling == (1.0, 0.0)
    for index in ((0, 0, 0), (4, 5, 3), (1, 2, 3)):
        ras = vol.affine @ np.r_[index, 1.0]
        np.testing.assert_allclose(ras[:3], (LPS_TO_RAS[:3, :3] @ index_to_lps(image, index)),
                                   atol=1e-9)


def test_nrrd_in_ras_space_is_read_in_the_same_world(tmp_path):
    """3D Slicer writes "space: right-anterior-superior" too: ITK converts it to LPS."""
    header = (b"NRRD0004\ntype: uint8\ndimension: 3\nspace: right-anterior-superior\n"
              b"sizes: 3 2 2\nspace directions: (0.5,0,0) (0,0.7,0) (0,0,2)\nkinds: domain domain "
              b"domain\nendian: little\nencoding: raw\nspace origin: (10,20,30)\n\n")
    (tmp_path / "ras.nrrd").write_bytes(header + bytes(range(12)))
    vol = io.format_of(tmp_path / "ras.nrrd").read(tmp_path / "ras.nrrd")
    np.testing.assert_allclose(vol.affine, [[0.5, 0, 0, 10], [0, 0.7, 0, 20], [0, 0, 2, 30],
                                            [0, 0, 0, 1]], atol=1e-12)
    assert vol.values[1, 0, 0] == 1 and vol.values[0, 1, 0] == 3 and vol.values[0, 0, 1] == 6


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
def test_data_prep_reads_them_as_it_reads_the_same_nifti(tmp_path, ext):
    data = rng_image((8, 9, 7), 4000, np.uint16)
    write_itk(tmp_path / f"v{ext}", data, direction=np.eye(3)[[1, 0, 2]] * [[1], [-1], [1]])
    vol = io.format_of(tmp_path / f"v{ext}").read(tmp_path / f"v{ext}")
    nib.save(nib.Nifti1Image(data, vol.affine), str(tmp_path / "v.nii"))
    for axis in (0, 1, 2):
        ours, info = read_volume(tmp_path / f"v{ext}", axis=axis, rule="mr")
        theirs, nifti_info = read_volume(tmp_path / "v.nii", axis=axis, rule="mr")
        assert info["format"] == io.format_of(tmp_path / f"v{ext}").name
        assert len(ours) == len(theirs) > 1
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_allclose(info["pixel_spacing"], nifti_info["pixel_spacing"], rtol=1e-6)
        assert info["slice_spacing"] == pytest.approx(nifti_info["slice_spacing"])


# ------------------------------------------------------------------------------ upscaling

def check_geometry(old, new, planes, axis):
    """ITK images: planes x3 with spacing / 3, the other axis kept, the direction kept, and new
    voxel 1 on old voxel 0 (imresize's geometry), at the first and last slice."""
    dim = old.GetDimension()
    assert new.GetSize() == tuple(n * 3 if d in planes else n for d, n in enumerate(old.GetSize()))
    np.testing.assert_allclose(new.GetSpacing(), [s / 3 if d in planes else s
                                                  for d, s in enumerate(old.GetSpacing())],
                               rtol=1e-9)
    np.testing.assert_allclose(new.GetDirection(), old.GetDirection(), atol=1e-12)
    slices = (0, old.GetSize()[axis] - 1) if dim == 3 else (None,)
    for k in slices:
        index_new, index_old = [1.0] * dim, [0.0] * dim
        if k is not None:
            index_new[axis] = index_old[axis] = k
        np.testing.assert_allclose(index_to_lps(new, index_new), index_to_lps(old, index_old),
                                   atol=1e-6)
        # The image keeps its extent: new index -0.5 is the old edge.
        edge_new, edge_old = [-0.5] * dim, [-0.5] * dim
        if k is not None:
            edge_new[axis] = edge_old[axis] = k
        np.testing.assert_allclose(index_to_lps(new, edge_new), index_to_lps(old, edge_old),
                                   atol=1e-6)


@pytest.mark.parametrize("ext", EXTENSIONS)
def test_upscale_round_trip_keeps_type_geometry_fields_and_compression(net, tmp_path, ext):
    data = rng_image((7, 6, 3), 3000, np.int16) - 500
    old = write_itk(tmp_path / f"in{ext}", data, compress=ext in (".nrrd", ".mhd"),
                    extra={"PatientID": "P-7"})
    info = upscale.upscale_path(tmp_path / f"in{ext}", tmp_path / f"out{ext}", net)
    assert info["slices"] == 3 and info["format"] in ("nrrd", "metaimage")
    new = sitk.ReadImage(str(tmp_path / f"out{ext}"))
    check_geometry(old, new, planes=(0, 1), axis=2)
    assert new.GetPixelIDValue() == old.GetPixelIDValue()  # int16 kept
    assert new.GetMetaData("PatientID") == "P-7"
    got = sitk.GetArrayFromImage(new).T
    for k in range(3):
        assert_rounds_to(got[..., k], bicubic(data[..., k]), lo=-32768, hi=32767)
    header = open(tmp_path / f"out{ext}", "rb").read(2000)
    if ext in (".nrrd", ".nhdr"):
        assert (b"encoding: gzip" in header) == (ext == ".nrrd")
    else:
        assert (b"CompressedData = True" in header) == (ext == ".mhd")
    written = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out"))
    detached = {".nhdr": ["out.nhdr", "out.raw"], ".mhd": ["out.mhd", "out.zraw"]}
    assert written == detached.get(ext, [f"out{ext}"])  # no temporary left


def test_upscale_along_another_axis_and_float_data(net, tmp_path):
    data = np.random.RandomState(4).randn(3, 7, 6).astype(np.float32) * 50
    old = write_itk(tmp_path / "in.nrrd", data, direction=np.eye(3))
    upscale.upscale_path(tmp_path / "in.nrrd", tmp_path / "out.nrrd", net, axis=0)  # sagittal
    new = sitk.ReadImage(str(tmp_path / "out.nrrd"))
    check_geometry(old, new, planes=(1, 2), axis=0)
    got = sitk.GetArrayFromImage(new).T
    assert got.dtype == np.float32
    for k in range(3):
        np.testing.assert_allclose(got[k], bicubic(data[k]), atol=1e-3)


def test_two_d_files_stay_two_d(net, tmp_path):
    data = rng_image((9, 8), 256, np.uint8)
    old = write_itk(tmp_path / "in.mha", data, compress=False)
    upscale.upscale_path(tmp_path / "in.mha", tmp_path / "out.mha", net)
    new = sitk.ReadImage(str(tmp_path / "out.mha"))
    assert new.GetDimension() == 2
    check_geometry(old, new, planes=(0, 1), axis=None)
    assert_rounds_to(sitk.GetArrayFromImage(new).T, bicubic(data), lo=0, hi=255)


def test_cli_nrrd_volume_goes_x3_with_its_spacing_updated(model, tmp_path, capfd):
    data = rng_image((6, 5, 4), 1000, np.uint16)
    write_itk(tmp_path / "brain.nrrd", data, spacing=(0.9, 0.9, 3.0))
    args = ["--in", str(tmp_path / "brain.nrrd"), "--out", str(tmp_path / "brain_x3.nrrd"),
            "--model", str(model[1]), "--deploy", str(model[0]), "--memory-budget", "300"]
    assert upscale.main(args) == 0
    assert capfd.readouterr().out.startswith("upscale: 4 slice(s) x3")
    new = sitk.ReadImage(str(tmp_path / "brain_x3.nrrd"))
    np.testing.assert_allclose(new.GetSpacing(), (0.3, 0.3, 3.0))
    assert new.GetSize() == (18, 15, 4)


# --------------------------------------------------------------------------------- errors

def bad_file(tmp_path, case):
    if case == "vector":
        image = sitk.GetImageFromArray(np.zeros((4, 5, 3), np.uint8), isVector=True)
        sitk.WriteImage(image, str(tmp_path / "in.nrrd"))
    elif case == "four_d":
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4, 5), np.int16), isVector=False),
                        str(tmp_path / "in.nrrd"))
    elif case == "truncated":
        write_itk(tmp_path / "full.nrrd", rng_image((20, 20, 5), 100, np.int16), compress=False)
        (tmp_path / "in.nrrd").write_bytes((tmp_path / "full.nrrd").read_bytes()[:-300])
        (tmp_path / "full.nrrd").unlink()
    elif case == "not_nrrd":
        (tmp_path / "in.nrrd").write_bytes(b"NRRD0004\nthis is no header\n\n" + gzip.compress(b"x"))
    return tmp_path / "in.nrrd"


BAD = {"vector": "3 components per voxel", "four_d": "dimension 4",
       "truncated": "cannot read NRRD", "not_nrrd": "cannot read NRRD"}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_are_one_line(tmp_path, case, model, capfd):
    path = bad_file(tmp_path, case)
    with pytest.raises(DataError, match=BAD[case]) as err:
        io.format_of(path).read(path)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400
    with pytest.raises(DataError, match=BAD[case]):
        read_volume(path)
    capfd.readouterr()
    code = upscale.main(["--in", str(path), "--out", str(tmp_path / "out.nrrd"),
                         "--model", str(model[1]), "--deploy", str(model[0])])
    lines = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and BAD[case] in lines[0]
    assert not (tmp_path / "out.nrrd").exists()


def test_a_detached_data_file_in_the_way_is_refused_unless_its_header_is_ours(net, tmp_path):
    write_itk(tmp_path / "in.mhd", rng_image((5, 5, 2), 100, np.int16), compress=False)
    (tmp_path / "out.raw").write_bytes(b"someone else's data")
    for force in (False, True):
        with pytest.raises(DataError, match=r"out\.raw: already exists and would be written with"):
            upscale.upscale_path(tmp_path / "in.mhd", tmp_path / "out.mhd", net, force=force)
    assert (tmp_path / "out.raw").read_bytes() == b"someone else's data"
    (tmp_path / "out.raw").unlink()
    upscale.upscale_path(tmp_path / "in.mhd", tmp_path / "out.mhd", net)
    upscale.upscale_path(tmp_path / "in.mhd", tmp_path / "out.mhd", net, force=True)  # its own pair
    assert sitk.ReadImage(str(tmp_path / "out.mhd")).GetSize() == (15, 15, 2)


def test_without_simpleitk_one_line_says_what_to_install(tmp_path, monkeypatch):
    write_itk(tmp_path / "in.nrrd", rng_image((4, 4, 2), 100, np.int16))
    monkeypatch.setitem(__import__("sys").modules, "SimpleITK", None)
    with pytest.raises(DataError, match="need the SimpleITK package; run 'make setup'"):
        itk.read(tmp_path / "in.nrrd", "NRRD", "NrrdImageIO", False)
