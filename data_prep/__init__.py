"""Medical images to HDF5 patch sets, with MATLAB-exact bicubic degradation (SRCNN release)."""
from .matlab import imresize, modcrop, rgb2ycbcr  # noqa: F401
