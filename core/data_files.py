"""A data set's folder: what data_prep writes and every reader finds there.

    data/<name>/
        manifest.json             recipe, config, sources, split, patch counts
        train.txt, test.txt       the HDF5 list files (Caffe's HDF5Data sources)
        train_*.h5, test_*.h5     the patches
        test_images/<slice>.png   8-bit HR ground truth: what evaluation scores
        shuffles/data_seed<k>/    the training patches in another seed's order

The layout lives here only: code asks these functions for a path, never spells one.
"""
from pathlib import Path

from core.config import ROOT

DATA_ROOT = ROOT / "data"


def data_dir(name, root=DATA_ROOT):
    """The folder of data set ``name`` under ``root`` (default data/)."""
    return Path(root) / name


def manifest_path(folder):
    return Path(folder) / "manifest.json"


def is_built(folder):
    """True when ``folder`` holds a data set (its manifest is written last, so it is whole)."""
    return manifest_path(folder).is_file()


def built(root=DATA_ROOT):
    """The names of the data sets built under ``root``."""
    return sorted(p.parent.name for p in Path(root).glob("*/manifest.json"))


def test_images(folder):
    return Path(folder) / "test_images"


def list_file(folder, role):
    """train.txt or test.txt (``role``: "train" or "test"): the HDF5 files of that role."""
    return Path(folder) / f"{role}.txt"


def shuffle_dir(folder, data_seed):
    """Where the training patches go in the order of another ``data_seed``."""
    return Path(folder) / "shuffles" / f"data_seed{data_seed}"
