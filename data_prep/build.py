"""Build one data set directory (core/data_files.py: its layout) from train and test slices; the
HDF5 patches are `data` (N,1,33,33) and `label` (N,1,21,21).

The directory is built under a temporary name and renamed into place: an interrupted or failed
build leaves the previous data set (or none), never a partial one.
"""
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from core.atomic import atomic_dir, write_json_atomic
from core.data_files import list_file, manifest_path, test_images
from core.config import ROOT

from .degrade import degrade
from .matlab import modcrop
from core.errors import DataError, warn
from .hdf5 import CAFFE_MAX_BLOB, write_list_file, write_patch_files
from .patches import extract_patches

FORMAT_VERSION = 1  # bump when the layout or the patch recipe changes: old data sets are rebuilt
DATA_KEYS = ("scale", "patch", "label", "stride_train", "stride_test", "data_seed", "brain_rule")  # in manifests


def check_slice(s, cfg):
    """Reason a slice cannot give patches, or None."""
    rows, cols = (d - d % cfg.scale for d in s.image.shape)
    if min(rows, cols) < cfg.patch:
        return f"{s.source} ({s.name}): {s.image.shape[0]}x{s.image.shape[1]} is smaller than " \
               f"{cfg.patch} px after modcrop({cfg.scale})"
    if s.image.min() == s.image.max():
        return f"{s.source} ({s.name}): constant slice"
    return None


def usable(slices, cfg, role):
    """The slices that can give patches; the others are skipped with a warning naming them."""
    good = []
    for s in slices:
        problem = check_slice(s, cfg)
        if problem:
            warn(f"skipped {role} slice {problem}")
        else:
            good.append(s)
    if not good:
        raise DataError(f"no usable {role} slices (see the warnings above)")
    return good


def patch_set(slices, cfg, stride, desc):
    """All patches of ``slices`` (degraded as the SRCNN release), concatenated in slice order."""
    inputs, labels = [], []
    for s in tqdm(slices, desc=desc, unit="slice", leave=False):
        hr, up = degrade(s.image, cfg.scale)
        x, y = extract_patches(hr, up, cfg.patch, cfg.label, stride)
        inputs.append(x)
        labels.append(y)
    return np.concatenate(inputs), np.concatenate(labels)


def list_root(dest):
    """Caffe runs from the repo root: list files there name HDF5 files relative to it."""
    return ROOT if Path(dest).resolve().is_relative_to(ROOT) else None


def write_contents(tmp, dest, train, test, cfg, max_elements):
    """Fill ``tmp`` with what ``dest`` will hold; returns the manifest's counts part."""
    counts = {}
    for role, slices, stride, shuffle in (("train", train, cfg.stride_train, True),
                                          ("test", test, cfg.stride_test, False)):
        data, label = patch_set(slices, cfg, stride, f"{dest.name} {role}")
        if shuffle:  # generate_train.m: randperm over all patches
            order = np.random.RandomState(cfg.data_seed).permutation(len(data))
            data, label = data[order], label[order]
        paths = write_patch_files(tmp, role, data, label, max_elements)
        root = list_root(dest)
        write_list_file(list_file(tmp, role), [dest.resolve() / p.name for p in paths], root)
        counts[role] = {"patches": len(data), "files": [p.name for p in paths]}
    test_images(tmp).mkdir()
    for s in test:
        hr = modcrop(s.image, cfg.scale)  # exactly what degrade() takes as ground truth
        if not cv2.imwrite(str(test_images(tmp) / f"{s.name}.png"), hr):
            raise DataError(f"could not write test image {s.name}.png")
    return counts


def build_dataset(dest, train, test, cfg, manifest, max_elements=CAFFE_MAX_BLOB):
    """Write the data set of ``train``/``test`` slices into ``dest`` atomically; ``manifest``
    (sources, split, intensity) is completed with the config and patch counts and saved."""
    dest = Path(dest)
    train, test = usable(train, cfg, "training"), usable(test, cfg, "test")
    with atomic_dir(dest) as tmp:
        counts = write_contents(tmp, dest, train, test, cfg, max_elements)
        manifest = dict(manifest, format_version=FORMAT_VERSION, name=dest.name,
                        config={k: getattr(cfg, k) for k in DATA_KEYS},
                        train_slices=[s.name for s in train], test_slices=[s.name for s in test],
                        test_shapes={s.name: [d - d % cfg.scale for d in s.image.shape] for s in test},
                        patches={k: v["patches"] for k, v in counts.items()},
                        files={k: v["files"] for k, v in counts.items()})
        write_json_atomic(manifest_path(tmp), manifest)
    return manifest
