"""The data set folder (``core/data_files.py``'s layout) that the trainer reads for a thick-slice
scan: training pairs from the scan's own in-plane slices degraded along one axis
(``data_prep.one_axis.slice_pairs``), a few of them held out as the test patches, and one in-plane
slice as the test image of the trainer's periodic check (an in-plane x3 score: a sign of
learning, not the through-plane score, which needs a true thin volume).

Built atomically, as ``data_prep.build`` builds the default sets; its manifest records the recipe,
so that a rerun with the same scan and settings reuses it.
"""
import json

import cv2
import numpy as np

from core.atomic import atomic_dir, write_json_atomic
from core.data_files import is_built, list_file, manifest_path, test_images
from core.errors import DataError
from .hdf5 import write_list_file, write_patch_files
from .one_axis import slice_pairs

TEST_SHARE = 20  # one patch in TEST_SHARE is held out for the trainer's test net (Caffe needs one)
FORMAT_VERSION = 1  # bump when the recipe changes: older folders are rebuilt


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
    data, label = slice_pairs(volume01, axis, factor, cfg.patch, cfg.label, cfg.stride_train,
                              profile, width)
    if len(data) < 2 * TEST_SHARE:
        raise DataError(f"the in-plane slices give {len(data)} training patches of {cfg.patch} px "
                        f"with content: too few to train on")
    order = np.random.RandomState(cfg.data_seed).permutation(len(data))
    held_out = np.arange(len(order)) % TEST_SHARE == 0  # in the shuffled order
    train, test = order[~held_out], order[held_out]
    with atomic_dir(dest) as tmp:
        for role, rows in (("train", train), ("test", test)):
            paths = write_patch_files(tmp, role, data[rows], label[rows])
            write_list_file(list_file(tmp, role), [dest.resolve() / p.name for p in paths])
        _test_image(tmp, volume01, axis)
        manifest = {"format_version": FORMAT_VERSION, "name": dest.name, "recipe": recipe,
                    "config": {"data_seed": cfg.data_seed, "patch": cfg.patch, "label": cfg.label,
                               "stride_train": cfg.stride_train},
                    "patches": {"train": int(len(train)), "test": int(len(test))}}
        write_json_atomic(manifest_path(tmp), manifest)
    return manifest, True


def _test_image(folder, volume01, axis):
    """The central in-plane slice as an 8-bit PNG (the trainer's periodic test image)."""
    image = np.take(volume01, volume01.shape[axis] // 2, axis=axis)
    test_images(folder).mkdir()
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    if not cv2.imwrite(str(test_images(folder) / "central.png"), pixels):
        raise DataError(f"could not write {test_images(folder) / 'central.png'}")
