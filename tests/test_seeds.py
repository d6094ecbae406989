"""Seeds: --seed K shifts Caffe's random_seed and the patch order; the same seed gives the same bits."""
import json
import shutil

import caffe
from caffe.proto import caffe_pb2
import h5py
import numpy as np
import pytest

from core.errors import DataError
from core.run_files import final_snapshot
from data_prep.shuffle import reorder, train_list
from tests.helpers import FAST
from tools.reference import pack, unpack
from tools.train import main as train_main

pytestmark = pytest.mark.blas  # numbers summed by OpenBLAS (tools/blas_kernels.py)


def weights(run_dir):
    manifest, deploy, caffemodel = final_snapshot(run_dir)
    net = caffe.Net(str(deploy), str(caffemodel), caffe.TEST)
    return manifest, [b.data.copy() for blobs in net.params.values() for b in blobs]


@pytest.fixture
def data_copy(data_root, tmp_path):
    """A copy of the shared toy data set: another seed's order is written into it."""
    shutil.copytree(data_root / "toy", tmp_path / "data" / "toy")
    return tmp_path / "data"


def train(data_root, run_dir, seed):
    args = ["--dataset", "toy", "--act", "rrelu", "--solver", "nesterov", "--iters", "10",
            "--seed", str(seed), "--data-root", str(data_root), "--run-dir", str(run_dir), *FAST]
    assert train_main(args) == 0
    return weights(run_dir)


def rows(list_file):
    out = []
    for name in list_file.read_text().split():
        with h5py.File(name) as f:
            out.append(f["label"][:])
    return np.concatenate(out)


@pytest.mark.slow
def test_two_seeds_differ_and_one_seed_repeats(data_copy, tmp_path):
    m0, w0 = train(data_copy, tmp_path / "s0", 0)
    m1, w1 = train(data_copy, tmp_path / "s1", 1)
    _, w1_again = train(data_copy, tmp_path / "s1b", 1)
    assert all(np.array_equal(a, b) for a, b in zip(w1, w1_again))
    assert not any(np.array_equal(a, b) for a, b in zip(w0, w1))
    assert m1["seed"] == 1 and m1["config"]["random_seed"] == m0["config"]["random_seed"] + 1
    assert m1["config"]["data_seed"] == m0["config"]["data_seed"] + 1
    # seed 1 reads its own order of the patches (data_prep.shuffle), seed 0 the data set's
    assert "shuffles/data_seed1/train.txt" in (tmp_path / "s1" / "train_val.prototxt").read_text()
    assert "toy/train.txt" in (tmp_path / "s0" / "train_val.prototxt").read_text()


def test_another_seeds_patch_order_is_the_same_patches_permuted(data_copy):
    toy = data_copy / "toy"
    assert train_list(toy, 0) == toy / "train.txt"  # the data set's own seed: its own files
    base, other = rows(toy / "train.txt"), rows(train_list(toy, 3))
    assert base.shape == other.shape and not np.array_equal(base, other)
    assert np.array_equal(base[reorder(len(base), 0, 3)], other)
    slice_order = base[np.argsort(np.random.RandomState(0).permutation(len(base)))]
    assert np.array_equal(slice_order[np.random.RandomState(3).permutation(len(base))], other)


@pytest.mark.slow
def test_reference_pack_is_a_scorable_run_of_three_files(data_root, tmp_path, monkeypatch):
    train(data_root, tmp_path / "run", 0)
    dest = pack(tmp_path / "run", tmp_path / "models" / "reference" / "toy")
    assert sorted(p.name for p in dest.iterdir()) == ["deploy.prototxt", "manifest.json",
                                                      "srcnn_iter_10.caffemodel",
                                                      "srcnn_iter_10.solverstate"]
    monkeypatch.chdir(tmp_path)  # a deploy.prototxt in the working folder is not the pack's
    (tmp_path / "deploy.prototxt").write_text("decoy")
    manifest, deploy, caffemodel = final_snapshot(dest)
    assert manifest["reference"] and caffemodel.parent == dest and deploy.parent == dest


@pytest.mark.slow
def test_a_packed_reference_continues_byte_exactly_in_a_fresh_run_directory(data_root, tmp_path):
    """A fresh clone has models/reference/<d>/ but no runs/: unpacking it and resuming gives the
    weights and solver state of a run trained that long at once."""
    def args(run, iters):
        return ["--dataset", "toy", "--act", "rrelu", "--solver", "nesterov", "--iters", str(iters),
                "--data-root", str(data_root), "--run-dir", str(run), "--resume", *FAST]
    assert train_main(args(tmp_path / "whole", 20)) == 0
    assert train_main(args(tmp_path / "first", 10)) == 0
    ref = pack(tmp_path / "first", tmp_path / "models" / "reference" / "toy")
    shutil.rmtree(tmp_path / "first")
    assert unpack(ref, tmp_path / "again") and not unpack(ref, tmp_path / "again")  # once only
    assert train_main(args(tmp_path / "again", 20)) == 0
    name = "snapshots/srcnn_iter_20.caffemodel"
    assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    states = []
    for run in ("again", "whole"):  # the same but for the path of its weights (learned_net)
        state = caffe_pb2.SolverState()
        state.ParseFromString((tmp_path / run / "snapshots/srcnn_iter_20.solverstate").read_bytes())
        assert state.learned_net == str(tmp_path / run / name)
        state.ClearField("learned_net")
        states.append(state.SerializeToString())
    assert states[0] == states[1]
    manifest = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert [t["iter"] for t in manifest["tests"]] == [10, 20] and manifest["unpacked_from"] == str(ref)


@pytest.mark.slow
def test_an_unfinished_long_run_packs_only_when_asked_and_continues_byte_exactly(data_root, tmp_path):
    """make reference's other variants train over several sittings: a run stopped on the way is
    packed with --partial (never by default), and unpacking it continues it to the bytes of a run
    trained at once."""
    def args(run, iters):
        return ["--dataset", "toy", "--act", "relu", "--solver", "sgd", "--iters", str(iters),
                "--data-root", str(data_root), "--run-dir", str(run), "--resume", *FAST]
    assert train_main(args(tmp_path / "whole", 200)) == 0
    stopped = run_cli_stopped_at(args(tmp_path / "first", 200), tmp_path / "first", 10)
    assert json.loads((stopped / "manifest.json").read_text())["status"] == "interrupted"
    with pytest.raises(DataError, match="not finished"):
        pack(stopped, tmp_path / "models" / "long" / "toy" / "relu_sgd")
    ref = pack(stopped, tmp_path / "models" / "long" / "toy" / "relu_sgd", partial=True)
    assert unpack(ref, tmp_path / "again")
    assert train_main(args(tmp_path / "again", 200)) == 0
    name = "snapshots/srcnn_iter_200.caffemodel"
    assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def run_cli_stopped_at(argv, run, iteration):
    """Train in a child process and SIGINT it once the snapshot of ``iteration`` is written."""
    import signal
    import subprocess
    import sys
    import time
    from core.config import ROOT
    child = subprocess.Popen([sys.executable, "-m", "tools.train", *argv], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "snapshots" / f"srcnn_iter_{iteration}.caffemodel").exists():
        assert time.time() < deadline and child.poll() is None
        time.sleep(0.005)
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=120) == 128 + signal.SIGINT
    return run
