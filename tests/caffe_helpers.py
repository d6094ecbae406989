"""Helpers for tests that run generated nets on tiny HDF5 files the tests write."""
from pathlib import Path

import caffe
import h5py
import numpy as np
from google.protobuf import text_format

from core.nets import train_val_net
from core.solvers import solver_param


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


def tiny_train_val(cfg, act, tmp_path, dataset="prostate"):
    """The generated train_val net with its HDF5 sources pointed at tiny files; returns its path."""
    net = train_val_net(cfg, act, dataset)
    sources = {"TRAIN": tiny_hdf5_list(tmp_path / "train", cfg.batch_train, cfg, seed=1),
               "TEST": tiny_hdf5_list(tmp_path / "test", 2 * cfg.batch_test, cfg, seed=2)}
    for layer in net.layer:
        if layer.type == "HDF5Data":
            phase = caffe.proto.caffe_pb2.Phase.Name(layer.include[0].phase)
            layer.hdf5_data_param.source = sources[phase]
    path = Path(tmp_path) / f"{act}_train_val.prototxt"
    path.write_text(text_format.MessageToString(net))
    return str(path)


def tiny_solver(cfg, act, solver, tmp_path):
    """A generated solver over ``tiny_train_val``; returns a pycaffe solver object."""
    net = tiny_train_val(cfg, act, tmp_path)
    param = solver_param(cfg, "prostate", act, solver, 2 * cfg.batch_test, net=net,
                         snapshot_prefix=str(Path(tmp_path) / "snap"))
    path = Path(tmp_path) / f"{act}_{solver}_solver.prototxt"
    path.write_text(text_format.MessageToString(param))
    return caffe.get_solver(str(path))
