"""The data set folder (``core/data_files.py``'s layout) that the trainer reads for a thick-slice
scan: training pairs from the scan's own in-plane slices degraded along one axis
(``data_prep.one_axis.slice_pairs``), except a few in-plane slices held out. The held-out slices
give the test patches and, as 8-bit pictures, the test images of the trainer's periodic check,
which scores the run's own task on them (``tools.periodic_test``: each held-out slice degraded
along one in-plane axis with the scan's factor and profile, the net beside the cubic along that
axis; the manifest's ``test_task`` says so).

The folder is named by its recipe's digest (:func:`dataset_name`): the name of the data set a run
records in its manifest is the identity of the pairs it learned from. Built atomically, as
``data_prep.build`` builds the default sets; a rerun with the same recipe reuses it.
"""
import hashlib
import json
import shutil

import cv2
import numpy as np

from core.atomic import atomic_dir, write_json_atomic
from core.data_files import is_built, list_file, manifest_path, test_images
from core.errors import DataError
from .hdf5 import write_list_file, write_patch_files
from .one_axis import slice_pairs

TEST_SHARE = 20  # one in-plane slice in TEST_SHARE (at least one) is held out of training
MIN_TRAIN = 40  # fewer training patches than this are too few to learn from
FORMAT_VERSION = 3  # bump when what a recipe builds changes: the digest, and so the folder, changes
PREFIX = "pairs-"  # the data sets of a work folder: pairs-<digest>


def recipe_digest(recipe):
    """The identity of the pairs ``recipe`` (JSON) builds, in this version of the code."""
    text = json.dumps({"format_version": FORMAT_VERSION, "recipe": recipe}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def dataset_name(recipe):
    """The data set's folder name: its recipe's digest, so that equal names hold equal pairs."""
    return PREFIX + recipe_digest(recipe)[:16]


def recipe_matches(dest, recipe):
    """True when ``dest`` holds a data set built from ``recipe``."""
    if not is_built(dest):
        return False
    manifest = json.loads(manifest_path(dest).read_text())
    return manifest.get("format_version") == FORMAT_VERSION and manifest.get("recipe") == recipe


def build_thick_data(dest, volume01, axis, factor, cfg, recipe, profile, width):
    """Write the data set of ``volume01`` (thick ``axis``, [0, 1] scale) into ``dest``;
    ``recipe`` (JSON) is what makes it: a rerun with the same recipe keeps the folder.
    Returns (its manifest, whether it was built now)."""
    if recipe_matches(dest, recipe):
        return json.loads(manifest_path(dest).read_text()), False
    per_slice = [slice_pairs(np.take(volume01, [k], axis=axis), axis, factor, cfg.patch, cfg.label,
                             cfg.stride_train, profile, width)
                 for k in range(volume01.shape[axis])]
    held = held_out_slices([len(x) for x, _ in per_slice])
    train = [k for k in range(len(per_slice)) if k not in held]
    data, label = _joined([per_slice[k] for k in train])
    test_data, test_label = _joined([per_slice[k] for k in held])
    if len(data) < MIN_TRAIN or not len(test_data):
        raise DataError(f"the in-plane slices give {len(data) + len(test_data)} training patches of "
                        f"{cfg.patch} px with content: too few to train on")
    order = np.random.RandomState(cfg.data_seed).permutation(len(data))
    with atomic_dir(dest) as tmp:
        for role, x, y in (("train", data[order], label[order]), ("test", test_data, test_label)):
            paths = write_patch_files(tmp, role, x, y)
            write_list_file(list_file(tmp, role), [dest.resolve() / p.name for p in paths])
        _test_images(tmp, volume01, axis, held)
        manifest = {"format_version": FORMAT_VERSION, "name": dest.name, "recipe": recipe,
                    "recipe_sha256": recipe_digest(recipe),
                    "config": {"data_seed": cfg.data_seed, "patch": cfg.patch, "label": cfg.label,
                               "stride_train": cfg.stride_train},
                    "held_out_slices": held,
                    "test_task": {"kind": "one_axis", "factor": factor, "profile": profile,
                                  "width_px": width},
                    "patches": {"train": int(len(data)), "test": int(len(test_data))}}
        write_json_atomic(manifest_path(tmp), manifest)
    return manifest, True


def held_out_slices(patch_counts):
    """The in-plane slices held out (indices): one in TEST_SHARE of those that give patches, at
    least one, spread evenly over them (none of the end slices unless it must)."""
    usable = [k for k, n in enumerate(patch_counts) if n > 0]
    if not usable:
        return []
    count = max(1, len(usable) // TEST_SHARE)
    picks = ((np.arange(count) + 0.5) * len(usable) / count).astype(int)
    return [usable[i] for i in picks]


def _joined(pairs):
    """The (inputs, labels) of several slices as one pair of arrays (possibly empty)."""
    if not pairs:
        return np.zeros((0,)), np.zeros((0,))
    return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])


def _test_images(folder, volume01, axis, slices):
    """The held-out in-plane slices as 8-bit PNGs (the trainer's periodic test images)."""
    test_images(folder).mkdir()
    for k in slices:
        pixels = np.clip(np.rint(np.take(volume01, k, axis=axis) * 255.0), 0, 255).astype(np.uint8)
        path = test_images(folder) / f"slice{k:04d}.png"
        if not cv2.imwrite(str(path), pixels):
            raise DataError(f"could not write {path}")


def remove_other_pairs(data_root, keep):
    """Remove the thick-slice data sets under ``data_root`` other than ``keep`` (a folder name):
    a run that learned from one keeps its weights, and the same recipe rebuilds the same pairs
    (and the same name) for a run to resume. Only folders named and built as ours go."""
    if not data_root.is_dir():
        return
    for folder in data_root.iterdir():
        if (folder.name.startswith(PREFIX) and folder.name != keep and folder.is_dir()
                and not folder.is_symlink() and _ours(folder)):
            shutil.rmtree(folder)


def _ours(folder):
    try:
        manifest = json.loads(manifest_path(folder).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "recipe" in manifest and manifest.get("name") == folder.name
