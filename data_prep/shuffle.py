"""Training patches in another seed's order, for repeating a run with another seed.

A data set's ``train_*.h5`` hold its patches in the order ``RandomState(data_seed).permutation``
(generate_train.m's randperm) of the slice-order patches, with the data set's own ``data_seed``.
A run with another ``data_seed`` needs the same patches in that seed's order: they are written
once per seed under ``<data set>/shuffles/data_seed<k>/`` and shared by every run of that seed.
"""
import fcntl
import json
from pathlib import Path

import h5py
import numpy as np

from core.atomic import atomic_dir
from core.data_files import list_file, manifest_path, shuffle_dir
from core.errors import DataError

from .hdf5 import write_list_file, write_patch_files


def train_list(data_dir, data_seed):
    """The HDF5 list file of ``data_dir``'s training patches in ``data_seed``'s order (the data
    set's own list when it was built with that seed); made on first use, atomically."""
    data_dir = Path(data_dir).resolve()
    built_with = json.loads(manifest_path(data_dir).read_text())["config"]["data_seed"]
    if data_seed == built_with:
        return list_file(data_dir, "train")
    dest = shuffle_dir(data_dir, data_seed)
    dest.parent.mkdir(exist_ok=True)
    with open(dest.parent / ".lock", "w") as lock:  # runs of one seed may start side by side
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not list_file(dest, "train").is_file():
            _write_reordered(data_dir, dest, built_with, data_seed)
    return list_file(dest, "train")


def reorder(count, built_with, data_seed):
    """Row indices into patches stored in ``built_with``'s order that give ``data_seed``'s order."""
    stored = np.random.RandomState(built_with).permutation(count)
    wanted = np.random.RandomState(data_seed).permutation(count)
    return np.argsort(stored)[wanted]


def _write_reordered(data_dir, dest, built_with, data_seed):
    data, label = _read_patches(list_file(data_dir, "train"), data_dir)
    rows = reorder(len(data), built_with, data_seed)
    with atomic_dir(dest) as tmp:
        paths = write_patch_files(tmp, "train", data[rows], label[rows])
        write_list_file(list_file(tmp, "train"), [dest / p.name for p in paths])


def _read_patches(list_file, data_dir):
    """All ``data``/``label`` rows of the files a list names, in order."""
    data, label = [], []
    for name in list_file.read_text().split():
        path = Path(name)
        path = path if path.is_absolute() else data_dir / path.name
        try:
            with h5py.File(path, "r") as f:
                data.append(f["data"][:])
                label.append(f["label"][:])
        except OSError as exc:
            raise DataError(f"{path}: cannot read training patches ({exc}); rebuild with make data")
    return np.concatenate(data), np.concatenate(label)
