"""HDF5 patch files in the layout Caffe's HDF5Data layer reads, and their list file."""
import h5py
import numpy as np

from core.atomic import atomic_path, write_text_atomic

CHUNK = 128  # patches per HDF5 chunk, as the SRCNN release's store2hdf5.m
CAFFE_MAX_BLOB = 2 ** 31 - 1  # Caffe blobs count elements in an int: a file's data must fit one


def patches_per_file(data_shape, max_elements=CAFFE_MAX_BLOB):
    """How many patches one file may hold before its `data` blob would pass ``max_elements``."""
    per_patch = int(np.prod(data_shape[1:]))
    return max(1, max_elements // per_patch)


def shard_name(stem, part):
    return f"{stem}_{part:03d}.h5"


def write_patch_files(directory, stem, data, label, max_elements=CAFFE_MAX_BLOB, first=0):
    """Write ``data``/``label`` (float32, N first) as ``<stem>_000.h5``, ``<stem>_001.h5``, ...
    (numbered from ``first``), splitting where one file would pass ``max_elements`` per blob. Each
    file is written under a temporary name and renamed. Returns the paths."""
    step = patches_per_file(data.shape, max_elements)
    paths = []
    for part, start in enumerate(range(0, len(data), step), start=first):
        path = directory / shard_name(stem, part)
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            for key, array in (("data", data), ("label", label)):
                chunk = array[start:start + step]
                f.create_dataset(key, data=chunk, dtype=np.float32,
                                 chunks=(min(CHUNK, len(chunk)),) + chunk.shape[1:])
        paths.append(path)
    return paths


def write_list_file(path, h5_paths, relative_to=None):
    """The list file HDF5Data's ``source`` names: one HDF5 path per line, relative to
    ``relative_to`` (the directory Caffe runs in) where given."""
    lines = [str(p.relative_to(relative_to) if relative_to else p) for p in h5_paths]
    write_text_atomic(path, "".join(line + "\n" for line in lines))
