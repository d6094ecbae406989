"""The tiles ``inference.net.SRNet`` runs a net over: how many input pixels a memory budget allows
one tile, and how a valid output is cut into tiles.

Every tile is read with the halo the net's valid convolutions need (``lost``: 12 px for 9-1-5,
measured on the net), so every output pixel sees exactly the input pixels it sees in one
whole-image pass; two library details are steered around so that the sums are the same too (the
constants below say which and why). No tile lets a blob (im2col buffers included) pass Caffe's
2^31 - 1 element limit, where Caffe aborts the process.
"""
import math
from dataclasses import dataclass

import numpy as np

from core.errors import DataError

# The engines that run a deploy net (inference.net.SRNet): pycaffe, OpenCV DNN's Caffe reader, and
# ONNX Runtime on the graph inference.onnx_graph builds. Here, not in inference.net, so that the command
# lines can offer them without loading Caffe; tiles are planned per engine below.
ENGINES = ("caffe", "opencv", "onnx")
# How an estimate gets its input's size back (inference.net.SRNet): "replicate" pads the input by the
# net's frame, "bicubic" keeps the bicubic values there
BORDERS = ("replicate", "bicubic")
DEFAULT_BUDGET_MB = 768  # per tile: Caffe's blobs and im2col buffers (an upper bound, see below)
BLOB_LIMIT = 2 ** 31 - 1  # Caffe's Blob::Reshape aborts past this many elements (blob.cpp)
FLOAT_BYTES = 4
# OpenBLAS (0.3.x, AVX-512 kernels, as on this project's machines) runs a float GEMM with alpha 1
# and beta 0, as Caffe's convolutions call it, through a "direct" kernel when M * N * K is below
# 28 * 512 * 512 (less with several threads), and through its packed kernels above; the direct
# kernel sums the last N % 16 columns in another order. Every tile is kept large enough for the
# packed kernels in every convolution (as the whole image then is), whose sums do not depend on
# N or on where a column sits: tiles equal the whole image bit for bit.
OPENBLAS_DIRECT_MNK = 28 * 512 * 512
# OpenCV 4.6's convolution (cv::dnn) sums the last few pixels of each output plane (row-major
# order) in another order than the rest: a tile's last pixels would differ from the same pixels
# inside a larger image in the last bits. So with engine="opencv" every tile, a whole image
# included, is computed with enough extra rows below it (copies of the image's last row where
# there are no more) that the last OPENCV_BLOCK - 1 pixels of every plane are dropped: every
# pixel kept is summed the same way whatever the tiling. (Measured: the differing pixels were
# always among a plane's last 23; OpenCV's blocks are 24 pixels wide.)
OPENCV_BLOCK = 24


@dataclass(frozen=True)
class Tile:
    """One tile of the net's output: rows ``row .. row+height`` and columns ``col .. col+width``
    are kept; ``extra_rows`` more rows below them are computed and dropped (engine "opencv";
    below the image they are computed from copies of its last row)."""
    row: int
    col: int
    height: int
    width: int
    extra_rows: int = 0


@dataclass(frozen=True)
class TilePlanner:
    """The tiles of one net under one memory budget: ``lost`` (rows, cols) is the halo,
    ``floats_per_pixel`` the memory per input pixel, ``widest`` the largest per-pixel blob
    (Caffe's element limit), ``min_tile_pixels`` the smallest tile OpenBLAS's packed kernels
    take, ``spill`` the pixels OpenCV tiles overhang (:meth:`for_net` measures them)."""
    lost: tuple
    budget_mb: float
    floats_per_pixel: int
    widest: int
    min_tile_pixels: int
    spill: int

    @classmethod
    def for_net(cls, net, proto, engine, lost, budget_mb):
        """The planner of a pycaffe ``net`` (its NetParameter ``proto``) run by ``engine``:
        per-pixel memory is every blob of the net plus the im2col buffer of every convolution
        that is not 1x1, at the tile's input size (ONNX Runtime's convolutions also expand their
        input into columns, so its tiles are planned as Caffe's)."""
        channels = [b.data.shape[1] for b in net.blobs.values()]
        columns, gemm_mk = [], []
        for layer in proto.layer:
            if layer.type != "Convolution" or layer.name not in net.params:
                continue
            weights = net.params[layer.name][0].data.shape  # out, in / group, kh, kw
            group = layer.convolution_param.group or 1
            kernel_dim = int(np.prod(weights[1:]))
            gemm_mk.append(weights[0] // group * kernel_dim)
            param = layer.convolution_param
            one_by_one = (weights[2:] == (1, 1) and all(v == 1 for v in param.stride)
                          and not any(param.pad) and not param.pad_h and not param.pad_w)
            if not one_by_one:
                columns.append(kernel_dim * group)
        # OpenCV's convolutions are its own code, not OpenBLAS's: no lower bound there.
        min_tile_pixels = max([math.ceil(OPENBLAS_DIRECT_MNK / mk) for mk in gemm_mk],
                              default=1) if engine == "caffe" else 1
        return cls(lost=lost, budget_mb=budget_mb,
                   floats_per_pixel=sum(channels) + sum(columns),
                   widest=max(channels + columns), min_tile_pixels=min_tile_pixels,
                   spill=OPENCV_BLOCK - 1 if engine == "opencv" else 0)

    def max_tile_pixels(self):
        """The most input pixels one tile may have: the budget, and Caffe's element limit for
        the widest blob (in channels per pixel, im2col buffers included)."""
        by_budget = int(self.budget_mb * 1e6) // (FLOAT_BYTES * self.floats_per_pixel)
        return min(by_budget, BLOB_LIMIT // self.widest)

    def tile_plan(self, shape):
        """The tiles covering a valid output of ``shape`` (rows, cols), row by row; one tile
        when the whole image fits. DataError if the budget cannot hold tiles large enough."""
        limit = self.max_tile_pixels()
        tiles = self._plan(shape, limit)
        if tiles is None:
            low, high = limit, 2 * limit + 1  # the smallest limit that works, for the message
            while self._plan(shape, high) is None:
                low, high = high, 2 * high
            while high - low > 1:
                mid = (low + high) // 2
                low, high = (low, mid) if self._plan(shape, mid) is not None else (mid, high)
            need = math.ceil(high * FLOAT_BYTES * self.floats_per_pixel / 1e6)
            raise DataError(f"memory budget {self.budget_mb:g} MB is too small for this net on a "
                            f"{shape[0]}x{shape[1]} image; it needs at least {need} MB")
        return tiles

    def _plan(self, shape, limit):
        """:meth:`tile_plan` for tiles of at most ``limit`` input pixels; None if none fits."""
        rows, cols = (int(n) for n in shape)
        (lost_r, lost_c), spill = self.lost, self.spill
        if (rows + lost_r + _overhang(spill, cols)) * (cols + lost_c) <= limit:
            return [Tile(0, 0, rows, cols, _overhang(spill, cols))]
        pad_r = lost_r + spill  # halo, and rows computed beyond the tile (at most spill)
        side = math.isqrt(limit)
        height, width = side - pad_r, side - lost_c
        if cols <= width:  # narrow: full-width tiles, as tall as the budget allows
            height, width = limit // (cols + lost_c) - pad_r, cols
        elif rows <= height:
            height, width = rows, limit // (rows + pad_r) - lost_c
        heights, widths = _splits(rows, height), _splits(cols, width)
        if heights is None or widths is None or min(heights) * min(widths) < self.min_tile_pixels:
            return None
        tiles, row = [], 0
        for h in heights:
            col = 0
            for w in widths:
                tiles.append(Tile(row, col, h, w, _overhang(spill, w)))
                col += w
            row += h
        return tiles


def _splits(n, limit):
    """Tile sizes along a side of ``n`` pixels, each at most ``limit``: as few and as even as
    can be. None if ``limit`` is below 1."""
    if n <= limit:
        return [n]
    if limit < 1:
        return None
    count = math.ceil(n / limit)
    base, extra = divmod(n, count)
    return [base + (i < extra) for i in range(count)]


def _overhang(spill, width):
    """Rows to compute below a tile ``width`` pixels wide so that its last ``spill`` pixels in
    row-major order (and those of every convolution's output plane, which is wider) lie in
    rows that are dropped."""
    return -(-spill // width) if spill else 0
