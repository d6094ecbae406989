"""Patches streamed into HDF5 shards of bounded size, and the shuffle over all training patches.

A data set whose training patches fit in one shard (``shard_mb``) is shuffled as generate_train.m
does: one ``RandomState(data_seed).permutation`` over all of them, in memory, so every data set
that fitted before keeps its bytes. A larger one is shuffled in bounded memory, by random keys:

1. each patch gets a random 64-bit key (KeyStream: generators seeded by data_seed and the
   patch's position in the stream, in blocks) and is appended, as it streams, to
   the scratch bucket file of its key's range (KeyBuckets: 1,024 equal ranges at first; a bucket
   that passes a shard is split in 8 by key);
2. the buckets are read back in key order, one at a time, each sorted by key (ties: stream
   order), and written as shards of exactly one shard's patches (the last fewer).

The result is all patches sorted by iid uniform keys: a uniform permutation, as one randperm,
whatever the number of buckets or their splits, which only bound memory (about one shard). The
patches are written once to the buckets and once to the shards. The scratch files live in the
data set's temporary folder and go with it.
"""
import bisect
import math
import resource

import h5py
import numpy as np

from .hdf5 import CAFFE_MAX_BLOB, CHUNK, patches_per_file, shard_name, write_patch_files

MIB = 2 ** 20
FIRST_BUCKETS = 1024  # key ranges at first: a set of well under 1,024 shards splits none
SPLIT = 8  # a bucket that passes a shard becomes this many
KEY_END = 2 ** 64
KEY_BLOCK = 2 ** 16  # keys drawn at once (KeyStream)
PIECE = 4096  # patches gathered (copied) at once when a bucket is written out in key order
SCATTER_PIECE = 128  # patches copied at once when a chunk is scattered to the buckets


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
    last one fewer), straight into each file's datasets as they come: nothing is held back in
    memory. ``total``, where known before the first patch, sizes each file exactly; otherwise a
    file's datasets are made ``rows`` long and cut to what it got when it is closed."""

    def __init__(self, directory, stem, rows, total=None):
        self.directory, self.stem, self.rows, self.planned = directory, stem, rows, total
        self.paths, self.file, self.filled = [], None, 0
        self.total = 0  # patches added

    def add(self, data, label):
        start = 0
        while start < len(data):
            if self.file is None:
                self._open(data.shape[1:], label.shape[1:])
            n = min(len(data) - start, len(self.sets[0]) - self.filled)
            for dset, array in zip(self.sets, (data, label)):
                dset[self.filled:self.filled + n] = array[start:start + n]
            self.filled += n
            self.total += n
            start += n
            if self.filled == len(self.sets[0]):
                self._close_file()

    def close(self):
        """Finish the last file; returns every file written, in order."""
        if self.file is not None:
            self._close_file()
        return self.paths

    def _open(self, data_shape, label_shape):
        path = self.directory / shard_name(self.stem, len(self.paths))
        self.file = h5py.File(path, "w")
        self.paths.append(path)
        exact = self.planned is not None
        size = min(self.rows, self.planned - self.total) if exact else self.rows
        self.sets = [self.file.create_dataset(key, (size,) + shape, np.float32,
                                              chunks=(min(CHUNK, size),) + shape,
                                              maxshape=None if exact else (size,) + shape)
                     for key, shape in (("data", data_shape), ("label", label_shape))]
        self.filled = 0

    def _close_file(self):
        for dset in self.sets:
            if len(dset) != self.filled:
                dset.resize(self.filled, axis=0)
        self.file.close()
        self.file, self.sets = None, None


def record_type(data_shape, label_shape):
    """One patch in a bucket file: its key, input and label."""
    return np.dtype([("key", "<u8"), ("data", "<f4", data_shape), ("label", "<f4", label_shape)])


class KeyStream:
    """The random keys of the stream's patches, by position: block ``b`` of KEY_BLOCK keys comes
    from a generator seeded by (seed, b), so a patch's key does not depend on how the stream was
    cut into chunks (sources, files)."""

    def __init__(self, seed):
        self.seed, self.position, self.block = seed, 0, (None, None)

    def _keys_of_block(self, b):
        if self.block[0] != b:
            keys = np.random.default_rng([self.seed, b]).integers(
                KEY_END - 1, size=KEY_BLOCK, dtype=np.uint64, endpoint=True)
            self.block = b, keys
        return self.block[1]

    def next(self, count):
        """The keys of the next ``count`` patches."""
        parts, end = [], self.position + count
        while self.position < end:
            b, offset = divmod(self.position, KEY_BLOCK)
            n = min(end - self.position, KEY_BLOCK - offset)
            parts.append(self._keys_of_block(b)[offset:offset + n])
            self.position += n
        return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


class KeyBuckets:
    """Patches with keys, appended to scratch files of key ranges (``bucket_<start>``) in
    ``scratch``; a bucket that passes ``limit`` patches is split in SPLIT ranges. ``sorted()``
    gives every patch back in key order (ties in the order added), one bucket in memory."""

    def __init__(self, scratch, limit, first=FIRST_BUCKETS):
        self.scratch, self.limit = scratch, limit
        self.starts = [KEY_END * k // first for k in range(first)]  # python ints: 2**64 fits
        self.sizes = [0] * first
        self.type = None
        self.count = 0
        self.open = {}  # start of a bucket's range: its file, open for appending
        self.max_open = max(16, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 256)

    def add(self, data, label, keys):
        if self.type is None:
            self.type = record_type(data.shape[1:], label.shape[1:])
        self.count += len(keys)
        for k in reversed(self._append(data, label, keys, 0, len(self.starts))):
            if self.sizes[k] > self.limit:  # a split shifts the buckets after k only
                self._split(k)

    def _path(self, k):
        return self.scratch / f"bucket_{self.starts[k]:020d}"

    def _append(self, data, label, keys, first, stop):
        """Append each patch to its bucket among buckets ``first``..``stop``-1, the patches sorted
        by key and copied SCATTER_PIECE at a time; returns the buckets appended to."""
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        edges = [0, *np.searchsorted(keys, np.array(self.starts[first + 1:stop], np.uint64)).tolist(),
                 len(keys)]  # bucket first + j holds the sorted patches edges[j]:edges[j + 1]
        touched = []
        for a in range(0, len(keys), SCATTER_PIECE):
            b = min(a + SCATTER_PIECE, len(keys))
            records = np.empty(b - a, self.type)
            rows = order[a:b]
            records["key"], records["data"], records["label"] = keys[a:b], data[rows], label[rows]
            j = bisect.bisect_right(edges, a) - 1
            while j < stop - first and edges[j] < b:
                lo, hi = max(edges[j], a), min(edges[j + 1], b)
                if hi > lo:
                    self._file(first + j).write(records[lo - a:hi - a].data)
                    self.sizes[first + j] += hi - lo
                    if not touched or touched[-1] != first + j:
                        touched.append(first + j)
                j += 1
        return touched

    def _file(self, k):
        """Bucket ``k``'s file, open for appending: kept open while the process may hold them
        all, so each chunk does not open a thousand files again."""
        if self.starts[k] not in self.open:
            if len(self.open) >= self.max_open:
                self._close_files()
            self.open[self.starts[k]] = open(self._path(k), "ab", buffering=0)
        return self.open[self.starts[k]]

    def _close_files(self):
        for f in self.open.values():
            f.close()
        self.open = {}

    def _read(self, k):
        f = self.open.pop(self.starts[k], None)
        if f is not None:
            f.close()
        path = self._path(k)
        records = np.fromfile(path, self.type)
        path.unlink()
        return records

    def _split(self, k):
        """Bucket ``k`` becomes SPLIT buckets of its key range, in the order its patches came."""
        records = self._read(k)
        end = self.starts[k + 1] if k + 1 < len(self.starts) else KEY_END
        step = (end - self.starts[k]) // SPLIT
        if step == 0:
            raise ValueError("a bucket of one key passes the limit")  # not with random 64-bit keys
        new = [self.starts[k] + step * j for j in range(SPLIT)]
        self.starts[k:k + 1] = new
        self.sizes[k:k + 1] = [0] * SPLIT
        self._append(records["data"], records["label"], records["key"], k, k + SPLIT)
        for j in reversed(range(k, k + SPLIT)):  # most of a bucket may land in one of its eighths
            if self.sizes[j] > self.limit:
                self._split(j)

    def sorted(self):
        """(data, label) pieces of every patch in key order; the bucket files are removed."""
        self._close_files()
        for k in range(len(self.starts)):
            if not self.sizes[k]:
                continue
            records = self._read(k)
            order = np.argsort(records["key"], kind="stable")
            for start in range(0, len(order), PIECE):
                rows = order[start:start + PIECE]
                yield records["data"][rows], records["label"][rows]


class ShuffledShards:
    """Training patches added in slice order, written shuffled by ``seed`` (module docstring):
    in memory as one permutation while they fit ``in_memory`` patches, by keys beyond."""

    def __init__(self, directory, stem, seed, in_memory, rows, max_elements=CAFFE_MAX_BLOB):
        self.directory, self.stem, self.seed = directory, stem, seed
        self.in_memory, self.rows, self.max_elements = in_memory, rows, max_elements
        self.pending, self.count, self.buckets = [], 0, None
        self.keys = KeyStream(seed)
        self.kind = None  # "permutation" or "buckets", once closed

    def add(self, data, label):
        self.count += len(data)
        if self.buckets is None:
            self.pending.append((data, label))
            if self.count > self.in_memory:
                self._start_buckets()
        else:
            self.buckets.add(data, label, self.keys.next(len(data)))

    def _start_buckets(self):
        self.scratch = self.directory / f".{self.stem}_scratch"
        self.scratch.mkdir()
        self.buckets = KeyBuckets(self.scratch, self.rows)
        while self.pending:
            data, label = self.pending.pop(0)
            self.buckets.add(data, label, self.keys.next(len(data)))

    def close(self):
        """Write the shards; returns their paths in order."""
        if self.buckets is None:
            self.kind = "permutation"
            return self._permuted()
        self.kind = "buckets"
        out = write_sorted(self.buckets, self.directory, self.stem, self.rows)
        self.scratch.rmdir()
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


def write_sorted(buckets, directory, stem, rows):
    """``buckets``' patches in key order as ``<stem>_NNN.h5`` shards of ``rows`` patches."""
    out = OrderedShards(directory, stem, rows, total=buckets.count)
    for data, label in buckets.sorted():
        out.add(data, label)
    return out.close()


def read_patches(path):
    with h5py.File(path, "r") as f:
        return f["data"][()], f["label"][()]


def key_shuffle(chunks, seed, scratch, directory, stem, rows):
    """Write the patches of ``chunks`` (an iterable of (data, label) in order) shuffled by ``seed``
    (the module docstring's keys) as ``<stem>_NNN.h5`` shards of ``rows`` patches; ``scratch`` is
    an empty folder for the buckets. Returns the shard paths."""
    buckets, keys = KeyBuckets(scratch, rows), KeyStream(seed)
    for data, label in chunks:
        buckets.add(data, label, keys.next(len(data)))
    return write_sorted(buckets, directory, stem, rows)
