"""Input/label patch pairs as the SRCNN release cuts them (generate_train.m, generate_test.m)."""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def extract_patches(hr, upscaled, patch, label, stride):
    """Cut ``patch``-sided inputs from ``upscaled`` and the central ``label``-sided part of the same
    place of ``hr``, at ``stride`` from the top-left corner, row by row.

    Returns float32 arrays (N, 1, patch, patch) and (N, 1, label, label)."""
    if hr.shape != upscaled.shape:
        raise ValueError(f"hr {hr.shape} and upscaled {upscaled.shape} differ in shape")
    pad = (patch - label) // 2  # the pixels the valid convolutions lose on each side
    inputs = sliding_window_view(upscaled, (patch, patch))[::stride, ::stride]
    rows, cols = inputs.shape[:2]
    labels = sliding_window_view(hr[pad:, pad:], (label, label))[::stride, ::stride][:rows, :cols]
    return (inputs.reshape(-1, 1, patch, patch).astype(np.float32),
            labels.reshape(-1, 1, label, label).astype(np.float32))
