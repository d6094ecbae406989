"""Plain helpers the test modules share (fixtures are in conftest.py): synthetic slices, tiny HDF5
patch files and trainable nets over them (core.run_files.trainable_net_files, as the trainer's);
tiny DICOM / NIfTI / PNG files for the readers; deploy nets with random or identity weights and
what inference.upscale's output is compared with; ``make`` in a clean environment."""
import json
import os
import subprocess
from pathlib import Path

import caffe
import cv2
import h5py
import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from core.config import DEFAULT, ROOT
from core.run_files import trainable_net_files
from data_prep.matlab import imresize
from data_prep.readers import Slice

# A small, fast variant of the net for the trainer's tests: the mechanics are the same as at full size.
FAST = ["batch_train=16", "n1=8", "n2=4", "test_interval=10", "snapshot=10"]


def random_slices(count, shape=(70, 64), seed=0):
    """``count`` random 8-bit slices, as a reader returns them."""
    rng = np.random.RandomState(seed)
    return [Slice(f"s{i:02d}", rng.randint(0, 256, shape).astype(np.uint8), f"synthetic{i}", i)
            for i in range(count)]


def tiny_hdf5_list(directory, count, cfg, seed=0):
    """An HDF5 list file of ``count`` random patches shaped as the config says."""
    rng = np.random.RandomState(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    h5 = directory / "patches.h5"
    with h5py.File(h5, "w") as f:
        f["data"] = rng.rand(count, 1, cfg.patch, cfg.patch).astype(np.float32)
        f["label"] = rng.rand(count, 1, cfg.label, cfg.label).astype(np.float32)
    listing = directory / "list.txt"
    listing.write_text(f"{h5}\n")
    return str(listing)


def tiny_net_files(cfg, act, solver, directory):
    """The trainer's net files (train_val, deploy, solver) in ``directory``, reading one batch of
    random training patches and two batches of random test patches; returns their paths."""
    directory = Path(directory)
    train = tiny_hdf5_list(directory / "train", cfg.batch_train, cfg, seed=1)
    test = tiny_hdf5_list(directory / "test", 2 * cfg.batch_test, cfg, seed=2)
    return trainable_net_files(directory, cfg, act, solver, train, test, dataset="tiny")


def tiny_train_val(cfg, act, directory):
    """The path of ``tiny_net_files``' train_val net."""
    return str(tiny_net_files(cfg, act, "sgd", directory)["train_val"])


def tiny_solver(cfg, act, solver, directory):
    """A pycaffe solver of ``tiny_net_files``' solver file."""
    return caffe.get_solver(str(tiny_net_files(cfg, act, solver, directory)["solver"]))


def seeded_training(cfg, act, solver, directory, steps):
    """(losses, every parameter) after ``steps`` seeded steps of a small SRCNN solver (batch 16,
    base_lr 0.01) of ``cfg``, reseeded before each step as the trainer does."""
    cfg = cfg.with_overrides(["batch_train=16", "base_lr=0.01"])
    caffe.set_random_seed(5)
    sgd = tiny_solver(cfg, act, solver, directory)
    losses = []
    for _ in range(steps):
        caffe.set_random_seed(sgd.iter)
        sgd.step(1)
        losses.append(float(sgd.net.blobs["loss"].data))
    return losses, [b.data.copy() for p in sgd.net.params.values() for b in p]


def tiny_training(directory, steps=3):
    """Every parameter after ``steps`` seeded steps of a small rrelu/nesterov SRCNN solver."""
    return seeded_training(DEFAULT, "rrelu", "nesterov", directory, steps)[1]


# ------------------------------------------------------- files for the readers

SERIES_A = "1.2.826.0.1.3680043.8.498.1"
SERIES_B = "1.2.826.0.1.3680043.8.498.2"


def ramp(shape=(40, 40), lo=100, hi=3000):
    """A non-constant uint16 test pattern."""
    return np.linspace(lo, hi, int(np.prod(shape))).reshape(shape).astype(np.uint16)


def expected_window(x, lo, hi):
    """Reference for the linear rules: clip, round half away from zero, uint8."""
    y = (np.asarray(x, np.float64) - lo) / (hi - lo) * 255.0
    return np.floor(np.clip(y, 0, 255) + 0.5).astype(np.uint8)


def write_dicom(path, pixels, *, instance=None, position=None, orientation=(1, 0, 0, 0, 1, 0),
                series=SERIES_A, modality="MR", photometric="MONOCHROME2",
                slope=None, intercept=None, bits_stored=16, preamble=True):
    """Uncompressed Explicit VR Little Endian, 16-bit unsigned; 3-D pixels -> multi-frame."""
    pixels = np.asarray(pixels, dtype="<u2")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = SERIES_A + ".9", series, modality
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [0.5, 0.75]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    if instance is not None:
        ds.InstanceNumber = instance
    if position is not None:
        ds.ImagePositionPatient = list(position)
        ds.ImageOrientationPatient = list(orientation)
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = pixels.tobytes()
    if preamble:
        ds.save_as(str(path), write_like_original=False)
    else:  # bare dataset: no preamble, no "DICM", no file meta
        ds.preamble, ds.file_meta = None, FileMetaDataset()
        pydicom.dcmwrite(str(path), ds, write_like_original=True)
    return path


def write_png(path, img):
    assert cv2.imwrite(str(path), img)
    return path


def write_nifti(path, data, affine=None):
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


# ------------------------------------------------------------ deploy nets

# Two pycaffe evaluations of one image whose sums OpenBLAS orders differently (tiled and whole, on
# its Haswell or Zen kernels): the most pixels whose quantised value may differ, by one level
# (docs/exactness.md)
QUANTISED_SHARE = 1e-3


def assert_within_one_level(a, b):
    """Quantised images ``a`` and ``b`` (uint8, uint16, ...) equal except by one level on at most
    QUANTISED_SHARE of their pixels."""
    steps = np.abs(np.asarray(a).astype(np.int64) - np.asarray(b).astype(np.int64))
    assert steps.max() <= 1 and np.mean(steps > 0) <= QUANTISED_SHARE, (steps.max(), np.mean(steps > 0))


def deploy(act):
    return str(ROOT / f"models/srcnn_{act}_deploy.prototxt")


def random_params(prototxt, seed):
    """{layer: [arrays]} of std 0.1 for a deploy net (biases included, so slopes matter)."""
    net = caffe.Net(prototxt, caffe.TEST)
    rng = np.random.RandomState(seed)
    return {name: [rng.normal(0, 0.1, b.data.shape) for b in blobs]
            for name, blobs in net.params.items()}


def save_caffemodel(prototxt, params, path):
    net = caffe.Net(prototxt, caffe.TEST)
    for name, arrays in params.items():
        for blob, array in zip(net.params[name], arrays):
            blob.data[...] = array
    net.save(str(path))
    return str(path)


def identity_params():
    """Weights that make the 9-1-5 ReLU net the identity for inputs of either sign: conv1 splits
    x into relu(x) and relu(-x), conv2 passes both, conv3 gives relu(x) - relu(-x) = x."""
    w1, w2, w3 = np.zeros((64, 1, 9, 9)), np.zeros((32, 64, 1, 1)), np.zeros((1, 32, 5, 5))
    w1[0, 0, 4, 4], w1[1, 0, 4, 4] = 1, -1
    w2[0, 0], w2[1, 1] = 1, 1
    w3[0, 0, 2, 2], w3[0, 1, 2, 2] = 1, -1
    return {"conv1": [w1, np.zeros(64)], "conv2": [w2, np.zeros(32)],
            "conv3": [w3, np.zeros(1)]}


# ------------------------------------------------------- inference.upscale's output

def bicubic(x):
    """MATLAB bicubic x3 of ``x`` (2-D or HxWxC) in float64."""
    return imresize(np.asarray(x, dtype=np.float64), 3)


def assert_rounds_to(actual, expected, unit=1.0, lo=None, hi=None):
    """``actual`` is ``expected`` (clipped to [lo, hi]) rounded to a multiple of ``unit``: within
    half a unit (plus the float32 arithmetic of the net)."""
    expected = np.clip(expected, lo, hi) if lo is not None else expected
    err = np.abs(np.asarray(actual, dtype=np.float64) - expected)
    assert err.max() <= unit * (0.5 + 1e-4), err.max()


def rng_image(shape, high, dtype, seed=0):
    return np.random.RandomState(seed).randint(0, high, size=shape).astype(dtype)


def eval_tables(folder, stem="r"):
    """``python -m eval``'s three table flags, each into ``folder`` (never the checkout's results/)."""
    return [arg for kind in ("json", "csv", "md") for arg in (f"--{kind}", str(Path(folder) / f"{stem}.{kind}"))]


def make_run(tmp_path, model, snapshots=True):
    """A run directory as tools.train leaves it, with the identity model as its last snapshot."""
    run = tmp_path / "run"
    (run / "snapshots").mkdir(parents=True)
    (run / "deploy.prototxt").write_text(Path(model[0]).read_text())
    caffemodel = run / "snapshots" / "srcnn_iter_20.caffemodel"
    caffemodel.write_bytes(Path(model[1]).read_bytes())
    items = [{"iter": 10, "caffemodel": str(run / "missing.caffemodel"), "solverstate": ""},
             {"iter": 20, "caffemodel": str(caffemodel), "solverstate": ""}]
    (run / "manifest.json").write_text(json.dumps({"snapshots": items if snapshots else []}))
    return run


def scorable_run(tmp_path, model, side):
    """(a folder of one side x side test image, a run ``python -m eval`` scores as relu_sgd)."""
    hr = tmp_path / "hr"
    hr.mkdir()
    cv2.imwrite(str(hr / "a.png"), rng_image((side, side), 256, np.uint8))
    run = make_run(tmp_path, model)
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "act": "relu", "solver": "sgd"}))
    return hr, run


# ------------------------------------------------------------------- make

def clean_env(**extra):
    """This environment without a calling make's, a Slurm job's or a site's variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "MAKE")) and k != "MFLAGS"}
    return dict(env, GLOG_minloglevel="2", **extra)


def make(*args, cwd=ROOT, env=None, timeout=120):
    return subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------ a real Orthanc (tests/test_pacs.py, test_upscale_pacs.py)

PACS_SCRIPT = ROOT / "tools" / "pacs" / "orthanc.sh"
PACS_EXPORTS = r"^export MEDSR_PACS_URL=(http://127\.0\.0\.1:\d+)\nexport MEDSR_PACS_CREDENTIALS=(.+)$"


def free_port():
    """A TCP port free on every address (Orthanc listens on all of them)."""
    import socket
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def orthanc(*args):
    """tools/pacs/orthanc.sh (what make pacs-up and pacs-down run) with ``args``."""
    return subprocess.run(["bash", str(PACS_SCRIPT), *map(str, args)], capture_output=True,
                          text=True, env=clean_env(), timeout=600)


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def orthanc_installed():
    import shutil
    return (shutil.which("Orthanc") or Path("/usr/sbin/Orthanc").exists()) and \
        any(Path(p).exists() for p in ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
                                       "/usr/lib/orthanc/libOrthancDicomWeb.so"))


def start_orthanc(folder, port):
    """The (url, credentials file) a server started in ``folder`` on ``port`` exports; as root it
    must start, else the calling test is skipped with the reason."""
    import re

    import pytest
    if not orthanc_installed() and os.geteuid() != 0:
        pytest.skip("the PACS tests need Orthanc and its DICOMweb plugin (Debian packages orthanc, "
                    "orthanc-dicomweb), or root to install them")
    up = orthanc("up", "--dir", folder, "--port", port)
    if up.returncode != 0:
        if os.geteuid() == 0:
            pytest.fail(f"pacs-up failed: {up.stdout}{up.stderr}")
        pytest.skip(f"Orthanc did not start: {up.stderr.strip()}")
    found = re.search(PACS_EXPORTS, up.stdout, re.M)
    assert found, up.stdout
    return found[1], found[2]


def orthanc_server(folder):
    """A generator for a module fixture: {url, credentials, folder} of a server of its own in
    ``folder``, stopped (and checked stopped) afterwards."""
    url, credentials = start_orthanc(folder, free_port())
    pid = int((Path(folder) / "orthanc.pid").read_text())
    yield {"url": url, "credentials": credentials, "folder": folder}
    assert orthanc("down", "--dir", folder).returncode == 0
    assert not alive(pid)
