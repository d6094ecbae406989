"""Patches streamed into HDF5 shards of bounded size, and the shuffle over all training patches.

A data set whose training patches fit in one shard (``shard_mb``) is shuffled as generate_train.m
does: one ``RandomState(data_seed).permutation`` over all of them, in memory, so every data set
that fitted before keeps its bytes. A larger one is shuffled in bounded memory:

1. the patches are spilled, in slice order, to scratch files of one shard each;
2. each spilled patch goes to one of K buckets drawn at random (a generator seeded by data_seed
   and the spill file's number), K chosen so a bucket holds a little under a shard;
3. each bucket is permuted (seeded by data_seed, K and its number) and written as the next shard.

Given the buckets' sizes, which patches share a bucket and their order in it are uniform, and the
sizes do not depend on the patches: the result is a uniform permutation of all patches, as one
randperm, in about two shards of memory whatever the data set's size. The scratch files live in
the data set's temporary folder and go with it.
"""
import math
import shutil

import h5py
import numpy as np

from .hdf5 import CAFFE_MAX_BLOB, patches_per_file, write_patch_files

MIB = 2 ** 20
BUCKET_FILL = 0.9  # buckets are drawn this full: a bucket's random excess rarely passes a shard


def patch_bytes(data_shape, label_shape):
    """Bytes of one float32 input/label pair."""
    return 4 * (math.prod(data_shape[1:]) + math.prod(label_shape[1:]))


def rows_in(shard_mb, data_shape, label_shape):
    """Patches that ``shard_mb`` MiB hold (at least one)."""
    return max(1, shard_mb * MIB // patch_bytes(data_shape, label_shape))


def shard_rows(shard_mb, data_shape, label_shape, max_elements=CAFFE_MAX_BLOB):
    """Patches in one shard: ``shard_mb`` MiB of them, and no more than one Caffe blob holds."""
    return min(rows_in(shard_mb, data_shape, label_shape), patches_per_file(data_shape, max_elements))


class OrderedShards:
    """Patches added in order, written as ``<stem>_NNN.h5`` files of ``rows`` patches each (the
    last one fewer); holds at most one shard in memory besides what is being added."""

    def __init__(self, directory, stem, rows):
        self.directory, self.stem, self.rows = directory, stem, rows
        self.pending, self.count, self.paths = [], 0, []
        self.total = 0  # patches added

    def add(self, data, label):
        self.pending.append((data, label))
        self.count += len(data)
        self.total += len(data)
        if self.count >= self.rows:
            self._flush(whole_shards_only=True)

    def close(self):
        """Write what is left; returns every file written, in order."""
        self._flush(whole_shards_only=False)
        return self.paths

    def _flush(self, whole_shards_only):
        if not self.pending:
            return
        data = np.concatenate([d for d, _ in self.pending])
        label = np.concatenate([lb for _, lb in self.pending])
        cut = len(data) - len(data) % self.rows if whole_shards_only else len(data)
        per_file = self.rows * math.prod(data.shape[1:])  # write_patch_files splits at this
        self.paths += write_patch_files(self.directory, self.stem, data[:cut], label[:cut],
                                        per_file, first=len(self.paths))
        rest = (data[cut:], label[cut:])
        self.pending, self.count = ([rest], len(rest[0])) if len(rest[0]) else ([], 0)


class ShuffledShards:
    """Training patches added in slice order, written shuffled by ``seed`` (module docstring):
    in memory as one permutation while they fit ``in_memory`` patches, by buckets beyond."""

    def __init__(self, directory, stem, seed, in_memory, rows, max_elements=CAFFE_MAX_BLOB):
        self.directory, self.stem, self.seed = directory, stem, seed
        self.in_memory, self.rows, self.max_elements = in_memory, rows, max_elements
        self.pending, self.count, self.spill = [], 0, None  # count: patches added
        self.kind = None  # "permutation" or "buckets", once closed

    def add(self, data, label):
        if self.spill is None:
            self.pending.append((data, label))
            self.count += len(data)
            if self.count > self.in_memory:
                self._start_spilling()
        else:
            self.spill.add(data, label)
            self.count += len(data)

    def _start_spilling(self):
        self.scratch = self.directory / f".{self.stem}_scratch"
        self.scratch.mkdir()
        self.spill = OrderedShards(self.scratch, "spill", self.rows)
        for data, label in self.pending:
            self.spill.add(data, label)
        self.pending = []

    def close(self):
        """Write the shards; returns their paths in order."""
        if self.spill is None:
            self.kind = "permutation"
            return self._permuted()
        self.kind = "buckets"
        paths = self.spill.close()
        chunks = (read_and_remove(p) for p in paths)
        out = bucket_shuffle(chunks, self.count, self.seed, self.scratch, self.directory, self.stem,
                             self.rows)
        shutil.rmtree(self.scratch)
        return out

    @property
    def total(self):
        return self.count

    def _permuted(self):
        if not self.pending:
            return []
        data = np.concatenate([d for d, _ in self.pending])
        label = np.concatenate([lb for _, lb in self.pending])
        self.pending = []
        order = np.random.RandomState(self.seed).permutation(len(data))  # generate_train.m: randperm
        return write_patch_files(self.directory, self.stem, data[order], label[order], self.max_elements)


def read_patches(path):
    with h5py.File(path, "r") as f:
        return f["data"][()], f["label"][()]


def read_and_remove(path):
    data, label = read_patches(path)
    path.unlink()
    return data, label


def bucket_count(count, rows):
    return max(1, math.ceil(count / (rows * BUCKET_FILL)))


def bucket_shuffle(chunks, count, seed, scratch, directory, stem, rows):
    """Write the ``count`` patches of ``chunks`` (an iterable of (data, label) in order) shuffled
    by ``seed`` as ``<stem>_NNN.h5`` shards of at most ``rows`` patches; ``scratch`` is an empty
    folder for the buckets. Returns the shard paths."""
    buckets = bucket_count(count, rows)
    shapes = None
    for number, (data, label) in enumerate(chunks):
        shapes = data.shape[1:], label.shape[1:]
        pick = np.random.default_rng([seed, number]).integers(buckets, size=len(data))
        order = np.argsort(pick, kind="stable")  # grouped by bucket, slice order kept within
        bounds = np.searchsorted(pick[order], np.arange(buckets + 1))
        data, label = data[order], label[order]
        for k in range(buckets):
            lo, hi = bounds[k], bounds[k + 1]
            if hi > lo:
                for key, rows_ in (("data", data[lo:hi]), ("label", label[lo:hi])):
                    with open(scratch / f"bucket_{k:05d}.{key}", "ab") as f:
                        f.write(np.ascontiguousarray(rows_, dtype=np.float32).tobytes())
    paths = []
    for k in range(buckets):
        parts = [scratch / f"bucket_{k:05d}.{key}" for key in ("data", "label")]
        if not parts[0].is_file():
            continue
        data = np.fromfile(parts[0], dtype=np.float32).reshape((-1,) + shapes[0])
        label = np.fromfile(parts[1], dtype=np.float32).reshape((-1,) + shapes[1])
        for p in parts:
            p.unlink()
        order = np.random.default_rng([seed, buckets, k]).permutation(len(data))
        paths += write_patch_files(directory, stem, data[order], label[order],
                                   rows * math.prod(shapes[0]), first=len(paths))
    return paths
