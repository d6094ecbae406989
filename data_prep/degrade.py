"""The one degradation of the project, as the SRCNN release's generate_train.m: the trainer's patches
and the evaluator's bicubic baseline and network inputs all come from ``degrade``."""
import numpy as np

from .matlab import imresize, modcrop


def degrade(hr_uint8, scale, boundary="symmetric"):
    """uint8 slice -> modcrop(scale) -> double in [0, 1] -> imresize(imresize(x, 1/scale), [h w]).

    Returns ``(hr, upscaled)``, both float64 in [0, 1] scale (the bicubic result is not clipped,
    as MATLAB's double imresize is not), of the modcropped shape."""
    hr = modcrop(np.asarray(hr_uint8), scale).astype(np.float64) / 255.0
    low = imresize(hr, 1.0 / scale, boundary=boundary)
    return hr, imresize(low, output_shape=hr.shape, boundary=boundary)


def low_resolution(hr_uint8, scale, boundary="symmetric"):
    """The x1/scale image of a modcropped slice (float64, [0, 1] scale), e.g. for figures."""
    hr = modcrop(np.asarray(hr_uint8), scale).astype(np.float64) / 255.0
    return imresize(hr, 1.0 / scale, boundary=boundary)
