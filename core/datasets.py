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
