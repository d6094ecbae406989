"""Plain helpers the test modules share (fixtures are in conftest.py): synthetic slices, tiny HDF5
patch files and trainable nets over them (core.run_files.trainable_net_files, as the trainer's)."""
from pathlib import Path

import caffe
import h5py
import numpy as np

from core.config import DEFAULT
from core.run_files import trainable_net_files
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


def tiny_training(directory, steps=3):
    """Every parameter after ``steps`` seeded steps of a small rrelu/nesterov SRCNN solver."""
    cfg = DEFAULT.with_overrides(["batch_train=16", "base_lr=0.01"])
    caffe.set_random_seed(5)
    solver = tiny_solver(cfg, "rrelu", "nesterov", directory)
    for _ in range(steps):
        caffe.set_random_seed(solver.iter)
        solver.step(1)
    return [b.data.copy() for p in solver.net.params.values() for b in p]
