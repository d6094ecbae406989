"""Issue 33, part B: patches stream from slice sources into shards of bounded size, shuffled over
all training patches in bounded memory, with the same bytes for any number of workers; the
trainer reads and resumes over many shards."""
import hashlib
import json
import tracemalloc
from dataclasses import dataclass

import h5py
import numpy as np
import pytest

from core.config import DEFAULT
from core.data_files import list_file
from data_prep.build import InMemorySource, build_dataset, source_patches
from data_prep.readers import Slice
from data_prep.shards import MIB
from data_prep.shuffle import train_list

SHAPE = (96, 90)  # 25 training patches a slice at stride 14, 12 at stride 21 (x3: 96x90)
PATCH_BYTES = 4 * (33 * 33 + 21 * 21)


@dataclass(frozen=True)
class SyntheticSeries:
    """A slice source that makes its slices when loaded (as a reader would read them)."""

    name: str
    seed: int
    count: int = 4

    def load(self):
        rng = np.random.RandomState(self.seed)
        return [Slice(f"{self.name}_{i:02d}", rng.randint(0, 256, SHAPE).astype(np.uint8),
                      f"synthetic/{self.name}", i) for i in range(self.count)]


def cohort(series, first_seed=0, count=4):
    return [SyntheticSeries(f"p{k:03d}", first_seed + k, count) for k in range(series)]


def rows(folder, role="train"):
    """(data, label) of a data set's role, its files concatenated in list order."""
    data, label = [], []
    for name in list_file(folder, role).read_text().split():
        with h5py.File(folder / name.split("/")[-1]) as f:
            data.append(f["data"][()])
            label.append(f["label"][()])
    return np.concatenate(data), np.concatenate(label)


def row_digests(data, label):
    """One digest per patch (input and label): a multiset of the patches when sorted."""
    return sorted(hashlib.sha256(d.tobytes() + lb.tobytes()).hexdigest() for d, lb in zip(data, label))


def build(dest, train, test, jobs=1, shard_mb=1, max_elements=2 ** 31 - 1, manifest=None):
    cfg = DEFAULT.with_overrides([f"shard_mb={shard_mb}"])
    return build_dataset(dest, train, test, cfg, manifest or {"sources": []}, max_elements, jobs=jobs)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A set of 60 series x 4 slices (6,000 training patches, 35 MiB) in 1 MiB shards."""
    dest = tmp_path_factory.mktemp("shards") / "big"
    manifest = build(dest, cohort(60), cohort(2, first_seed=500), jobs=1)
    return dest, manifest


def test_many_shards_of_bounded_size_hold_every_patch_once_shuffled(big):
    dest, manifest = big
    files = manifest["files"]["train"]
    assert manifest["shuffle"] == "buckets" and manifest["patches"]["train"] == 60 * 4 * 25
    assert len(files) >= 35 and list_file(dest, "train").read_text().split() == [str(dest.resolve() / f)
                                                                                  for f in files]
    for name in files:
        with h5py.File(dest / name) as f:
            assert len(f["data"]) * PATCH_BYTES <= MIB
    data, label = rows(dest)
    in_order = [source_patches(s, DEFAULT, DEFAULT.stride_train, False) for s in cohort(60)]
    stream = np.concatenate([d for _, d, _ in in_order]), np.concatenate([lb for _, _, lb in in_order])
    assert row_digests(data, label) == row_digests(*stream)  # every patch, exactly once
    assert not np.array_equal(data[:100], stream[0][:100])  # and shuffled
    # the shuffle spans the set: the first shard draws from series all over the stream
    first = {hashlib.sha256(d.tobytes()).hexdigest() for d in data[:len(data) // len(files)]}
    where = [k for k, d in enumerate(stream[0]) if hashlib.sha256(d.tobytes()).hexdigest() in first]
    assert min(where) < len(stream[0]) // 10 and max(where) > len(stream[0]) * 9 // 10
    assert not any(p.name.startswith(".") for p in dest.iterdir())  # no scratch left


def test_two_workers_and_a_rerun_write_the_same_shards(big, tmp_path):
    dest, manifest = big
    again = build(tmp_path / "big", cohort(60), cohort(2, first_seed=500), jobs=2)
    assert again["files"] == manifest["files"] and again["train_slices"] == manifest["train_slices"]
    for role in ("train", "test"):
        for a, b in zip(rows(dest, role), rows(tmp_path / "big", role)):
            np.testing.assert_array_equal(a, b)
    for png in (dest / "test_images").iterdir():
        assert png.read_bytes() == (tmp_path / "big" / "test_images" / png.name).read_bytes()


def test_the_shuffle_runs_in_bounded_memory(tmp_path):
    """The largest memory the build holds at once is a few shards, not the data set: 35 MiB of
    patches built in 1 MiB shards peak under 8 MiB of Python-tracked memory (numpy's arrays
    included); the in-memory way of before held the set twice."""
    sources = cohort(60)
    tracemalloc.start()
    try:
        build(tmp_path / "big", sources, cohort(1, first_seed=500), shard_mb=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 60 * 4 * 25 * PATCH_BYTES > 30 * MIB and peak < 8 * MIB


def test_a_set_within_one_shard_is_todays_single_permutation(tmp_path):
    """A set that fits one shard is generate_train.m's randperm over all its patches."""
    manifest = build(tmp_path / "small", cohort(3), cohort(1, first_seed=500), shard_mb=256)
    assert manifest["shuffle"] == "permutation" and manifest["files"]["train"] == ["train_000.h5"]
    data, label = rows(tmp_path / "small")
    parts = [source_patches(s, DEFAULT, DEFAULT.stride_train, False) for s in cohort(3)]
    order = np.random.RandomState(DEFAULT.data_seed).permutation(len(data))
    np.testing.assert_array_equal(data, np.concatenate([d for _, d, _ in parts])[order])
    np.testing.assert_array_equal(label, np.concatenate([lb for _, _, lb in parts])[order])


def test_slices_and_in_memory_sources_give_the_same_data_set(tmp_path):
    slices = [s for src in cohort(3) for s in src.load()]
    test = cohort(1, first_seed=500)[0].load()
    a = build(tmp_path / "a", slices, test)
    b = build(tmp_path / "b", [InMemorySource("all", tuple(slices))], [InMemorySource("t", tuple(test))])
    assert a["files"] == b["files"] and a["train_slices"] == b["train_slices"]
    for x, y in zip(rows(tmp_path / "a"), rows(tmp_path / "b")):
        np.testing.assert_array_equal(x, y)


@dataclass(frozen=True)
class WithBadSlices:
    """A series with a constant slice and one too small to cut a patch from."""

    name: str = "bad"

    def load(self):
        good = SyntheticSeries("ok", 9, 2).load()
        return [good[0], Slice("flat", np.full(SHAPE, 9, np.uint8), "synthetic/bad", 1),
                Slice("tiny", np.zeros((20, 20), np.uint8), "synthetic/bad", 2), good[1]]


@pytest.mark.parametrize("jobs", [1, 2])
def test_bad_slices_in_a_source_are_skipped_with_a_warning_each(tmp_path, capsys, jobs):
    manifest = build(tmp_path / "d", [WithBadSlices()] + cohort(2), cohort(1, first_seed=500), jobs=jobs)
    err = capsys.readouterr().err
    assert "skipped training slice synthetic/bad (flat): constant slice" in err
    assert "skipped training slice synthetic/bad (tiny)" in err
    assert "flat" not in manifest["train_slices"] and "ok_00" in manifest["train_slices"]
    assert manifest["patches"]["train"] == 10 * 25


@dataclass(frozen=True)
class Interrupted:
    """A series whose loading is interrupted (Ctrl-C) halfway through a build."""

    name: str = "stop"

    def load(self):
        raise KeyboardInterrupt


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_interrupted_build_leaves_the_previous_data_set(tmp_path, jobs):
    dest = tmp_path / "d"
    before = build(dest, cohort(3), cohort(1, first_seed=500))
    with pytest.raises(KeyboardInterrupt):
        build(dest, cohort(30) + [Interrupted()] + cohort(3), cohort(1, first_seed=500), jobs=jobs)
    assert json.loads((dest / "manifest.json").read_text()) == json.loads(json.dumps(before))
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_another_seed_of_a_sharded_set_is_the_same_patches_in_bounded_shards(big):
    dest, manifest = big
    listed = train_list(dest, 3)
    assert listed != list_file(dest, "train") and train_list(dest, 3) == listed  # made once
    folder = listed.parent
    names = [n.split("/")[-1] for n in listed.read_text().split()]
    seeded = [], []
    for name in names:
        with h5py.File(folder / name) as f:
            assert len(f["data"]) * PATCH_BYTES <= MIB
            seeded[0].append(f["data"][()])
            seeded[1].append(f["label"][()])
    seeded = np.concatenate(seeded[0]), np.concatenate(seeded[1])
    stored = rows(dest)
    assert row_digests(*seeded) == row_digests(*stored)
    assert not np.array_equal(seeded[0][:50], stored[0][:50])


@pytest.mark.slow
@pytest.mark.blas
def test_training_reads_many_shards_and_resumes_to_the_same_bytes(tmp_path):
    """20 iterations over a set of many shards of different sizes (64 patches, the last 4;
    batches cross files), and the same run stopped at 10 and resumed: the data layer is advanced across
    the shards to where it was, and the weights end the same bit for bit."""
    from tests.helpers import FAST
    from tests.test_train import snapshot_blobs
    from tools.train import main as train_main
    from tools.train_loop import data_period

    root = tmp_path / "data"
    manifest = build(root / "many", cohort(12, count=3), cohort(1, first_seed=500), shard_mb=1,
                     max_elements=33 * 33 * 64)
    sizes = []
    for name in manifest["files"]["train"]:
        with h5py.File(root / "many" / name) as f:
            sizes.append(len(f["data"]))
    assert len(sizes) >= 6 and len(set(sizes)) > 1 and sum(sizes) == 12 * 3 * 25
    assert data_period(root / "many", 16) == 900 // np.gcd(900, 16)

    def args(run, iters, *extra):
        return ["--dataset", "many", "--act", "rrelu", "--solver", "nesterov", "--iters", str(iters),
                "--data-root", str(root), "--run-dir", str(tmp_path / run), *extra, *FAST]

    assert train_main(args("straight", 20)) == 0
    assert train_main(args("resumed", 10)) == 0
    assert train_main(args("resumed", 20, "--resume")) == 0
    done = json.loads((tmp_path / "straight" / "manifest.json").read_text())
    assert done["status"] == "done" and done["iterations_done"] == 20
    assert snapshot_blobs(tmp_path / "straight") == snapshot_blobs(tmp_path / "resumed")


def source_bytes(source):
    """Bytes of one source's training patches."""
    return len(source.load()) * 25 * PATCH_BYTES


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_build_holds_one_sources_patches_whatever_the_workers(tmp_path, jobs):
    """Sources far larger than a shard (1,000 patches, 5.8 MiB, in 1 MiB shards): the build's
    process holds one source's patches and little more (small copies), with -j 1 (no copy while
    a source's slices are cut and concatenated, none when shards are written) and with -j 2 (the
    workers' finished sources wait on disk, not pickled in the parent)."""
    sources = cohort(3, count=40)
    tracemalloc.start()
    try:
        build(tmp_path / "big", sources, cohort(1, first_seed=500), jobs=jobs, shard_mb=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.6 * source_bytes(sources[0])  # the code before: 4.2 times


def keyed_stream(count, chunk):
    rng = np.random.RandomState(4)
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        yield rng.rand(n, 1, 3, 3).astype(np.float32), rng.rand(n, 1, 2, 2).astype(np.float32)


@pytest.mark.parametrize("first, max_open", [(1, 1000), (3, 1000), (1024, 1000), (64, 5)])
def test_key_buckets_split_in_bounded_size_and_give_the_keys_order(tmp_path, first, max_open):
    """However many buckets there are at first, and however they split (or how many files may
    stay open), the patches come back sorted by key (ties in stream order), and no bucket passes
    its limit for longer than a chunk."""
    from data_prep.shards import KeyBuckets, KeyStream

    buckets, keys = KeyBuckets(tmp_path, limit=50, first=first), KeyStream(seed=7)
    buckets.max_open = max_open
    stream = list(keyed_stream(2000, 300))
    for data, label in stream:
        buckets.add(data, label, keys.next(len(data)))
        assert max(buckets.sizes) <= 50 and sum(buckets.sizes) == buckets.count
    assert len(buckets.starts) >= 2000 / 50
    every = np.concatenate([KeyStream(seed=7).next(2000)])
    order = np.argsort(every, kind="stable")
    pieces = list(buckets.sorted())
    np.testing.assert_array_equal(np.concatenate([d for d, _ in pieces]),
                                  np.concatenate([d for d, _ in stream])[order])
    np.testing.assert_array_equal(np.concatenate([lb for _, lb in pieces]),
                                  np.concatenate([lb for _, lb in stream])[order])
    assert not list(tmp_path.iterdir())


def test_a_patchs_key_does_not_depend_on_the_chunks():
    from data_prep.shards import KEY_BLOCK, KeyStream

    whole = KeyStream(3).next(KEY_BLOCK * 2 + 5)
    cut = KeyStream(3)
    parts = [cut.next(n) for n in (7, KEY_BLOCK, 0, KEY_BLOCK - 9, 7)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert len(set(whole.tolist())) == len(whole)
