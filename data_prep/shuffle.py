"""Training patches in another seed's order, for repeating a run with another seed.

A data set's ``train_*.h5`` hold its patches in the order ``RandomState(data_seed).permutation``
(generate_train.m's randperm) of the slice-order patches, with the data set's own ``data_seed``.
A run with another ``data_seed`` needs the same patches in that seed's order: they are written
once per seed under ``<data set>/shuffles/data_seed<k>/`` and shared by every run of that seed.

A data set too large for one shard (manifest ``shuffle``: "buckets", data_prep/shards.py) was
shuffled by random keys, not by one permutation: its other seeds' orders are the key shuffle of
``data_seed`` applied to its stored order, in the same bounded memory. They are deterministic and
uniform, but not the bytes a build with that data_seed would give.
"""
import fcntl
import json
import shutil
from pathlib import Path

import numpy as np

from core.atomic import atomic_dir
from core.data_files import list_file, manifest_path, shuffle_dir
from core.errors import DataError

from .hdf5 import write_list_file, write_patch_files
from .shards import key_shuffle, read_patches, shard_rows


def train_list(data_dir, data_seed):
    """The HDF5 list file of ``data_dir``'s training patches in ``data_seed``'s order (the data
    set's own list when it was built with that seed); made on first use, atomically."""
    data_dir = Path(data_dir).resolve()
    manifest = json.loads(manifest_path(data_dir).read_text())
    built_with = manifest["config"]["data_seed"]
    if data_seed == built_with:
        return list_file(data_dir, "train")
    dest = shuffle_dir(data_dir, data_seed)
    dest.parent.mkdir(exist_ok=True)
    with open(dest.parent / ".lock", "w") as lock:  # runs of one seed may start side by side
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not list_file(dest, "train").is_file():
            if manifest.get("shuffle") == "buckets":
                _write_rebucketed(data_dir, dest, manifest, data_seed)
            else:
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


def _write_rebucketed(data_dir, dest, manifest, data_seed):
    """The key shuffle of ``data_seed`` over the stored shards, one shard in memory at a time."""
    config = manifest["config"]
    rows = shard_rows(config["shard_mb"], (1, 1, config["patch"], config["patch"]),
                      (1, 1, config["label"], config["label"]))
    with atomic_dir(dest) as tmp:
        scratch = tmp / ".scratch"
        scratch.mkdir()
        chunks = (_read_file(path) for path in _listed(list_file(data_dir, "train"), data_dir))
        paths = key_shuffle(chunks, data_seed, scratch, tmp, "train", rows)
        shutil.rmtree(scratch)
        write_list_file(list_file(tmp, "train"), [dest / p.name for p in paths])


def _listed(list_file, data_dir):
    """The HDF5 files a list names, in order."""
    for name in list_file.read_text().split():
        path = Path(name)
        yield path if path.is_absolute() else data_dir / path.name


def _read_file(path):
    try:
        return read_patches(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read training patches ({exc}); rebuild with make data")


def _read_patches(list_file, data_dir):
    """All ``data``/``label`` rows of the files a list names, in order."""
    parts = [_read_file(path) for path in _listed(list_file, data_dir)]
    return np.concatenate([d for d, _ in parts]), np.concatenate([lb for _, lb in parts])
