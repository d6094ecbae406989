"""Build one data set directory (core/data_files.py: its layout) from train and test slices; the
HDF5 patches are `data` (N,1,33,33) and `label` (N,1,21,21).

The slices come from *slice sources* (SliceSource: a series, a volume, a list in memory), loaded
one at a time, in ``jobs`` worker processes where asked, their patches consumed in the sources'
order: the bytes do not depend on ``jobs``. Patches stream into shards of at most ``shard_mb``
MiB and are shuffled in bounded memory (data_prep/shards.py), so memory does not grow with the
number of sources.

The directory is built under a temporary name and renamed into place: an interrupted or failed
build leaves the previous data set (or none), never a partial one.
"""
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path
import time
import typing

import cv2
import numpy as np
from tqdm import tqdm

from core.atomic import atomic_dir, write_json_atomic
from core.data_files import list_file, manifest_path, test_images
from core.config import ROOT
from core.datasets import patches_per_image

from .degrade import degrade
from .matlab import modcrop
from core.errors import DataError, warn
from .hdf5 import CAFFE_MAX_BLOB, write_list_file
from .patches import extract_patches
from .readers import Slice
from .shards import OrderedShards, ShuffledShards, rows_in, shard_rows

FORMAT_VERSION = 1  # bump when the layout or the patch recipe changes: old data sets are rebuilt
DATA_KEYS = ("scale", "patch", "label", "stride_train", "stride_test", "data_seed", "brain_rule",
             "shard_mb")  # in manifests


def check_slice(s, cfg):
    """Reason a slice cannot give patches, or None."""
    rows, cols = (d - d % cfg.scale for d in s.image.shape)
    if min(rows, cols) < cfg.patch:
        return f"{s.source} ({s.name}): {s.image.shape[0]}x{s.image.shape[1]} is smaller than " \
               f"{cfg.patch} px after modcrop({cfg.scale})"
    if s.image.min() == s.image.max():
        return f"{s.source} ({s.name}): constant slice"
    return None


def list_root(dest):
    """Caffe runs from the repo root: list files there name HDF5 files relative to it."""
    return ROOT if Path(dest).resolve().is_relative_to(ROOT) else None


class SliceSource(typing.Protocol):
    """What build_dataset reads slices from: ``name`` (unique in a data set) and ``load()``, the
    source's slices (data_prep.readers.Slice) in order. Picklable: workers load sources."""

    name: str

    def load(self) -> list: ...


@dataclass(frozen=True)
class InMemorySource:
    """Slices already read, as a source."""

    name: str
    slices: tuple

    def load(self):
        return list(self.slices)


def as_sources(items):
    """Slice sources for ``items``: sources as they are, a list of slices one source each."""
    return [InMemorySource(s.name, (s,)) if isinstance(s, Slice) else s for s in items]


@dataclass
class SliceRecord:
    """What the build keeps of one slice: its name, why it was skipped (or None), its modcropped
    shape, and (test slices only) the modcropped 8-bit image evaluation scores."""

    name: str
    problem: typing.Optional[str]
    shape: list
    image: typing.Optional[np.ndarray] = None


def source_patches(source, cfg, stride, keep_images):
    """(slice records, data, label) of one source, its slices' patches in slice order, written
    into arrays of the source's patch count (no second copy); runs in a worker when jobs > 1."""
    slices = source.load()
    records = [SliceRecord(s.name, check_slice(s, cfg), [d - d % cfg.scale for d in s.image.shape])
               for s in slices]
    counts = [0 if r.problem else patches_per_image(r.shape, cfg, stride) for r in records]
    data = np.empty((sum(counts), 1, cfg.patch, cfg.patch), np.float32)
    label = np.empty((sum(counts), 1, cfg.label, cfg.label), np.float32)
    start = 0
    for s, r, n in zip(slices, records, counts):
        if r.problem is None:
            hr, up = degrade(s.image, cfg.scale)
            data[start:start + n], label[start:start + n] = extract_patches(hr, up, cfg.patch,
                                                                            cfg.label, stride)
            start += n
            r.image = modcrop(s.image, cfg.scale) if keep_images else None  # what degrade() takes as truth
    return records, data, label


def in_order(work, items, jobs):
    """``work(item)`` for each item, in the items' order, by ``jobs`` processes; while one result
    is consumed the ``jobs`` workers make the next ones, and no more wait (``jobs`` + 1 results
    at most)."""
    if jobs <= 1:
        yield from map(work, items)
        return
    with ProcessPoolExecutor(jobs, mp_context=get_context("fork")) as pool:
        waiting = deque()
        try:
            for item in items:
                waiting.append(pool.submit(work, item))
                if len(waiting) > jobs:
                    yield waiting.popleft().result()
            while waiting:
                yield waiting.popleft().result()
        finally:
            for future in waiting:
                future.cancel()


def patches_to_files(numbered, folder, **kwargs):
    """source_patches of ``numbered`` = (number, source) in a worker, its patches saved as
    ``folder/<number>.{data,label}.npy``: (records, the two paths). The parent reads one source's
    patches at a time from there instead of holding every finished one, pickled, in memory."""
    number, source = numbered
    records, data, label = source_patches(source, **kwargs)
    paths = [folder / f"{number:07d}.{key}.npy" for key in ("data", "label")]
    for path, array in zip(paths, (data, label)):
        np.save(path, array)
    return records, paths


def read_and_remove(paths):
    arrays = [np.load(path) for path in paths]
    for path in paths:
        path.unlink()
    return arrays


def patches_in_order(sources, jobs, scratch, **kwargs):
    """(records, data, label) of each source, in order: in this process, or by ``jobs`` workers
    through files in ``scratch`` (an empty folder)."""
    if jobs <= 1:
        yield from map(partial(source_patches, **kwargs), sources)
        return
    work = partial(patches_to_files, folder=scratch, **kwargs)
    for records, paths in in_order(work, enumerate(sources), jobs):
        yield (records, *read_and_remove(paths))


ROLE_WORDS = {"train": "training", "test": "test"}


def stream_role(sources, cfg, role, sink, desc, jobs, keep_images, scratch):
    """Feed the patches of ``sources`` to ``sink`` in order, with a progress bar over sources;
    yields each slice's record (a skipped slice gets its warning line here, in order)."""
    stride = cfg.stride_train if role == "train" else cfg.stride_test
    patches, start = 0, time.monotonic()
    with tqdm(total=len(sources), desc=desc, unit="source", leave=False) as bar:
        for records, data, label in patches_in_order(sources, jobs, scratch, cfg=cfg, stride=stride,
                                                     keep_images=keep_images):
            for r in records:
                if r.problem:
                    warn(f"skipped {ROLE_WORDS[role]} slice {r.problem}")
            sink.add(data, label)
            patches += len(data)
            del data, label  # not held while the next source's patches are made
            yield from records
            bar.set_postfix_str(f"{patches / max(time.monotonic() - start, 1e-9):.0f} patches/s")
            bar.update()


@dataclass
class RoleFiles:
    """What one role left in the data set: its patch count, files, slices used (records without
    images) and how the patches were shuffled (ShuffledShards.kind; None for test)."""

    patches: int
    files: list
    used: list
    shuffle: typing.Optional[str]


def write_role(tmp, dest, role, sources, cfg, max_elements, jobs):
    """Stream one role's patches into ``tmp`` (test slices also as test_images/<slice>.png)."""
    shapes = (1, 1, cfg.patch, cfg.patch), (1, 1, cfg.label, cfg.label)
    rows = shard_rows(cfg.shard_mb, *shapes, max_elements)
    if role == "train":
        sink = ShuffledShards(tmp, role, cfg.data_seed, rows_in(cfg.shard_mb, *shapes), rows, max_elements)
    else:
        sink = OrderedShards(tmp, role, rows)
    used = []
    scratch = tmp / f".{role}_sources"  # the workers' patches, one source each while it waits
    scratch.mkdir()
    for record in stream_role(sources, cfg, role, sink, f"{dest.name} {role}", jobs, role == "test",
                              scratch):
        if record.problem is None:
            if record.image is not None:
                write_test_image(tmp, record)
            used.append(SliceRecord(record.name, None, record.shape))
    if not used:
        raise DataError(f"no usable {ROLE_WORDS[role]} slices (see the warnings above)")
    scratch.rmdir()
    paths = sink.close()
    write_list_file(list_file(tmp, role), [dest.resolve() / p.name for p in paths], list_root(dest))
    return RoleFiles(sink.total, [p.name for p in paths], used, getattr(sink, "kind", None))


def write_test_image(tmp, record):
    if not cv2.imwrite(str(test_images(tmp) / f"{record.name}.png"), record.image):
        raise DataError(f"could not write test image {record.name}.png")


def build_dataset(dest, train, test, cfg, manifest, max_elements=CAFFE_MAX_BLOB, *, jobs=1):
    """Write the data set of ``train``/``test`` (lists of slices, or of slice sources) into
    ``dest`` atomically, by ``jobs`` processes; ``manifest`` (sources, split, intensity) is
    completed with the config and patch counts and saved."""
    dest = Path(dest)
    with atomic_dir(dest) as tmp:
        test_images(tmp).mkdir()
        roles = {role: write_role(tmp, dest, role, as_sources(items), cfg, max_elements, jobs)
                 for role, items in (("train", train), ("test", test))}
        manifest = dict(manifest, format_version=FORMAT_VERSION, name=dest.name,
                        config={k: getattr(cfg, k) for k in DATA_KEYS},
                        train_slices=[r.name for r in roles["train"].used],
                        test_slices=[r.name for r in roles["test"].used],
                        test_shapes={r.name: r.shape for r in roles["test"].used},
                        patches={k: v.patches for k, v in roles.items()},
                        files={k: v.files for k, v in roles.items()},
                        shuffle=roles["train"].shuffle)
        write_json_atomic(manifest_path(tmp), manifest)
    return manifest
