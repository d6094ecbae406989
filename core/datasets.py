"""The three default data sets of the paper and their fixed test geometry.

Every default test image has a declared shape, so the number of test patches (and with it the
solver's test_iter) follows from the config alone; building the data checks the images match.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class DefaultDataset:
    """Split and geometry of one default data set (docs/data.md, "The default data sets")."""

    name: str
    test_count: int  # test images, as in the paper's Fig. 5
    test_shape: tuple  # (rows, cols) of every test image, already a multiple of the scale


DEFAULTS = {
    "brain": DefaultDataset("brain", 6, (369, 300)),  # axial Colin27 slices, modcrop(3)
    "prostate": DefaultDataset("prostate", 7, (384, 384)),  # native ProstateX T2 slices
    "breast": DefaultDataset("breast", 4, (384, 384)),  # tissue crops of downscaled mammograms
}


def patches_per_image(shape, cfg, stride):
    """Input patches of side cfg.patch at ``stride`` that fit in an image of ``shape``."""
    rows, cols = shape
    if rows < cfg.patch or cols < cfg.patch:
        return 0
    return ((rows - cfg.patch) // stride + 1) * ((cols - cfg.patch) // stride + 1)


def count_test_patches(dataset, cfg):
    """Test patches of a default data set (stride_test), for the solver's test_iter."""
    spec = DEFAULTS[dataset]
    return spec.test_count * patches_per_image(spec.test_shape, cfg, cfg.stride_test)


def image_patients(manifest):
    """{test image name: patient} of a data set's manifest, or None where it names no patients.

    The one place patient identity is read: a cohort's manifest (data_prep/cohort) lists each series
    it used with its patient, its role and its stem ``<patient>_<series>``, and names each test
    image ``<stem>_<slice>``. The stem is looked up, never parsed out of the name: a PatientID may
    hold '_'. The default data sets and a single-series set have no cohort part: None."""
    series = (manifest.get("cohort") or {}).get("series")
    if not series:
        return None
    patient_of_stem = {s["name"]: s["patient"] for s in series if "test" in s.get("role", "")}
    patients = {}
    for name in manifest.get("test_slices", []):
        stem = name.rpartition("_")[0]
        if stem not in patient_of_stem:
            raise ValueError(f"test image {name!r} is of no test series of the manifest")
        patients[name] = patient_of_stem[stem]
    return patients


def read_image_patients(folder):
    """:func:`image_patients` of the data set in ``folder``: None without a manifest (a folder of
    images); DataError, one line, for an unreadable one or a test image of no listed series."""
    import json  # here, not above: core.data_files imports core.config, which imports this module

    from core.data_files import manifest_path
    from core.errors import DataError

    path = manifest_path(folder)
    if not path.is_file():
        return None
    try:
        return image_patients(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot tell the test images' patients ({exc})") from None
