"""Super-resolution through a deploy net, with pycaffe or OpenCV's DNN module, tile by tile.

The deploy nets have no padding: an HxW input gives an (H-12)x(W-12) estimate. ``SRNet`` returns
an estimate of the input's size; its ``border`` says where the 6-px frame comes from.

Any image size in bounded memory: the net runs over tiles whose size comes from a memory budget
(``budget_mb``), each read with the halo its valid convolutions need (``lost``: 12 px for 9-1-5,
measured on the net, not written down) so that every output pixel sees exactly the input pixels
it sees in one whole-image pass. The result is the same, bit for bit on the CPU, as one pass
over the whole image wherever that fits (tests/test_tiling.py); two library details are steered
around for that (the constants below say which and why). An image that fits the budget is one
tile: the same single pass as before tiling existed. No tile lets a blob (im2col buffers
included) pass Caffe's 2^31 - 1 element limit, where Caffe aborts the process.

Weights are checked against the prototxt before Caffe sees them: Caffe aborts the whole process
(glog FATAL, no exception) on a corrupt caffemodel or a layer whose blobs differ in number or
shape, so those become a one-line ``DataError`` here instead; so do inputs Caffe would abort on
(a net input of another channel count, an image smaller than the receptive field) or that would
give NaN (values that are not finite as float32).
"""
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import caffe
import cv2
import numpy as np
from caffe.proto import caffe_pb2
from google.protobuf import text_format
from google.protobuf.message import DecodeError
from tqdm import tqdm

from data_prep.degrade import degrade
from core.errors import DataError

ENGINES = ("caffe", "opencv")
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
PROGRESS_DELAY_S = 3.0  # a progress bar over tiles appears for images that take longer


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


def _check_deploy(path):
    """(path, NetParameter) of the deploy prototxt, after checking it exists and parses (Caffe
    would abort)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: deploy prototxt not found")
    proto = caffe_pb2.NetParameter()
    try:
        text_format.Parse(path.read_text(), proto)
    except (text_format.ParseError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a Caffe prototxt ({err})") from None
    return path, proto


def _read_caffemodel(path):
    """The caffemodel as a NetParameter; DataError if it is missing or does not parse."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: caffemodel not found")
    data = path.read_bytes()
    model = caffe_pb2.NetParameter()
    try:
        # The C++ protobuf backend may stop early on garbage with only a RuntimeWarning and
        # return how many bytes it consumed: a short count means corrupt too.
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            consumed = model.ParseFromString(data)
    except (DecodeError, UnicodeDecodeError, ValueError, SystemError):
        consumed = None
    if consumed is not None and consumed != len(data):
        consumed = None
    if consumed is None:
        raise DataError(f"{path}: not a Caffe model (cannot parse it)")
    return model


def _proto_shape(blob):
    """A BlobProto's shape, 4-D legacy fields (num, channels, height, width) if it has no shape."""
    if blob.HasField("shape"):
        return tuple(blob.shape.dim)
    return (blob.num, blob.channels, blob.height, blob.width)


def _legacy4(shape):
    """Shape padded to 4-D with leading 1s, as Caffe compares legacy blobs."""
    return (1,) * (4 - len(shape)) + tuple(shape)


def _same_shape(proto_shape, net_shape, legacy):
    if legacy:
        return _legacy4(proto_shape) == _legacy4(net_shape)
    return tuple(proto_shape) == tuple(net_shape)


def _check_caffemodel(net, model, path):
    """DataError unless the caffemodel fills every parameter of ``net`` with blobs of its shapes.

    Mirrors Caffe's CopyTrainedLayersFrom: layers match by name and extra model layers are
    ignored (snapshots of the train_val net have data and loss layers); V1 (``layers``) models
    are covered too. A net layer with parameters but no weights in the model is an error here,
    where Caffe would silently keep its random initial weights.
    """
    sources = {layer.name: layer for layer in list(model.layer) + list(model.layers)}
    for name, layer in net.layer_dict.items():
        wanted = [tuple(b.data.shape) for b in layer.blobs]
        source = sources.get(name)
        if source is None:
            if wanted:
                raise DataError(f"{path}: no weights for layer {name!r} of the deploy net "
                                "(not a model of this net?)")
            continue
        legacy = [not b.HasField("shape") for b in source.blobs]
        found = [_proto_shape(b) for b in source.blobs]
        if len(found) != len(wanted) or not all(
                _same_shape(f, w, lg) for f, w, lg in zip(found, wanted, legacy)):
            raise DataError(f"{path}: layer {name!r} has blobs {found}, the deploy net wants "
                            f"{wanted} (prototxt and caffemodel do not match)")


def _blob_array(value):
    """A parameter as an array: an ndarray, or a pycaffe Blob (as in solver.net.params)."""
    return np.asarray(value.data if hasattr(value, "diff") else value)


def _copy_params(net, params, complete):
    """Copy ``{layer: [arrays]}`` into ``net.params``; DataError on unknown layers or shapes."""
    for name, arrays in params.items():
        if name not in net.params:
            raise DataError(f"params: the deploy net has no parameter layer {name!r}")
        arrays = [_blob_array(a) for a in arrays]
        wanted = [tuple(b.data.shape) for b in net.params[name]]
        found = [a.shape for a in arrays]
        if found != wanted:
            raise DataError(f"params: layer {name!r} has blobs {found}, the net wants {wanted}")
        for blob, array in zip(net.params[name], arrays):
            blob.data[...] = array
    missing = [name for name in net.params if name not in params]
    if complete and missing:
        raise DataError(f"params: no weights for layer(s) {', '.join(missing)}")


class SRNet:
    """A deploy net that maps a bicubic-upscaled image to its SR estimate of the same size.

    Args:
        deploy_prototxt: a deploy net (Input ``data`` 1x1xHxW, one output blob, ``conv3``).
        caffemodel: trained weights; checked against the prototxt (DataError on mismatch).
        engine: "caffe" (pycaffe, in Caffe's current CPU/GPU mode) or "opencv" (cv2.dnn, needs
            a caffemodel file).
        params: ``{layer name: [arrays or pycaffe Blobs]}`` copied over the weights, engine
            "caffe" only: lets the trainer score its current weights without writing a file.
            Without a caffemodel it must cover every parameter layer.
        border: how the estimate gets the input's size although the net loses 6 px per side:
            "replicate" (default) pads the input by 6 px with edge replication so the valid
            convolutions return the full size. Closest to the release's MATLAB demo, which
            pads every layer's input ('same', 'replicate' imfilter); the two differ only
            within about 6 px of the edge.
            "bicubic" runs the net on the unpadded input and fills the 6-px frame with the
            bicubic input's own values; the image must be at least 13x13 (the receptive field).
        budget_mb: memory for one tile, in MB (10^6 bytes): every blob of the net plus the
            im2col buffer of every convolution that is not 1x1, at the tile's input size (an
            upper bound: Caffe's blobs shrink layer by layer, and the project's direct
            convolution never fills conv3's buffer). Images within it run in one pass.
    """

    def __init__(self, deploy_prototxt, caffemodel=None, engine="caffe", params=None,
                 border="replicate", budget_mb=DEFAULT_BUDGET_MB):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if border not in BORDERS:
            raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
        if caffemodel is None and params is None:
            raise ValueError("SRNet: give a caffemodel or params (no random-weight nets)")
        if engine == "opencv" and (caffemodel is None or params is not None):
            raise ValueError("engine='opencv' loads weights from a caffemodel file only")
        if not budget_mb > 0:
            raise DataError(f"memory budget must be positive, got {budget_mb!r} MB")
        deploy, proto = _check_deploy(deploy_prototxt)
        self.engine, self.border, self.budget_mb = engine, border, float(budget_mb)
        # A weightless Caffe net gives the parameter shapes to check and the pixels lost.
        self._net = caffe.Net(str(deploy), caffe.TEST)
        self._input, self._output = self._net.inputs[0], self._net.outputs[0]
        self._check_channels(deploy)
        self.lost = self._lost_pixels()
        self._layout(proto)
        if caffemodel is not None:
            _check_caffemodel(self._net, _read_caffemodel(caffemodel), caffemodel)
            if engine == "caffe":
                self._net.copy_from(str(caffemodel))
            else:
                self._cv = cv2.dnn.readNetFromCaffe(str(deploy), str(caffemodel))
        if params is not None:
            _copy_params(self._net, params, complete=caffemodel is None)

    # ------------------------------------------------------------------ what the net is

    def _check_channels(self, deploy):
        """DataError unless input and output are N x 1 x H x W: a grey image goes in as one
        channel, and Caffe aborts when a convolution's input has another channel count."""
        for role, name in (("input", self._input), ("output", self._output)):
            shape = self._net.blobs[name].data.shape
            if len(shape) != 4 or shape[1] != 1:
                raise DataError(f"{deploy}: the net's {role} {name!r} has shape {shape}; "
                                "SRNet needs 1 channel (N x 1 x H x W)")

    def _lost_pixels(self):
        """(rows, cols) lost by the valid convolutions: nominal input size minus output size."""
        size_in = self._net.blobs[self._input].data.shape[2:]
        size_out = self._net.blobs[self._output].data.shape[2:]
        return tuple(int(i - o) for i, o in zip(size_in, size_out))

    def _layout(self, proto):
        """Per-pixel memory, the largest per-pixel blob (Caffe's element limit), the smallest
        tile OpenBLAS's packed kernels take, and the rows OpenCV tiles overhang."""
        channels = [b.data.shape[1] for b in self._net.blobs.values()]
        columns, gemm_mk = [], []
        for layer in proto.layer:
            if layer.type != "Convolution" or layer.name not in self._net.params:
                continue
            weights = self._net.params[layer.name][0].data.shape  # out, in / group, kh, kw
            group = layer.convolution_param.group or 1
            kernel_dim = int(np.prod(weights[1:]))
            gemm_mk.append(weights[0] // group * kernel_dim)
            param = layer.convolution_param
            one_by_one = (weights[2:] == (1, 1) and all(v == 1 for v in param.stride)
                          and not any(param.pad) and not param.pad_h and not param.pad_w)
            if not one_by_one:
                columns.append(kernel_dim * group)
        self.floats_per_pixel = sum(channels) + sum(columns)
        self._widest = max(channels + columns)
        # OpenCV's convolutions are its own code, not OpenBLAS's: no lower bound there.
        self._min_tile_pixels = max([math.ceil(OPENBLAS_DIRECT_MNK / mk) for mk in gemm_mk],
                                    default=1) if self.engine == "caffe" else 1
        self._spill = OPENCV_BLOCK - 1 if self.engine == "opencv" else 0

    @property
    def receptive_field(self):
        """(rows, cols) of input pixels that one output pixel sees (13x13 for 9-1-5)."""
        return tuple(n + 1 for n in self.lost)

    def _frame(self):
        """((top, bottom), (left, right)) widths of the frame the net does not produce."""
        return tuple((n // 2, n - n // 2) for n in self.lost)

    # ------------------------------------------------------------------------ tiling

    def max_tile_pixels(self):
        """The most input pixels one tile may have: the budget, and Caffe's element limit for
        the widest blob (in channels per pixel, im2col buffers included)."""
        by_budget = int(self.budget_mb * 1e6) // (FLOAT_BYTES * self.floats_per_pixel)
        return min(by_budget, BLOB_LIMIT // self._widest)

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
        (lost_r, lost_c), spill = self.lost, self._spill
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
        if heights is None or widths is None or min(heights) * min(widths) < self._min_tile_pixels:
            return None
        tiles, row = [], 0
        for h in heights:
            col = 0
            for w in widths:
                tiles.append(Tile(row, col, h, w, _overhang(spill, w)))
                col += w
            row += h
        return tiles

    # ---------------------------------------------------------------------- estimates

    def __call__(self, upscaled):
        """SR estimate (float64, [0, 1] scale, neither clipped nor quantised) of a 2-D
        bicubic-upscaled image (as ``degrade`` returns), of the same size."""
        x = np.asarray(upscaled)
        if x.ndim != 2 or x.size == 0:
            raise DataError(f"SRNet: need a non-empty 2-D (one-channel) image, got shape "
                            f"{x.shape}")
        return self.estimate(lambda a, b: x[a:b], x.shape)

    def estimate(self, rows, shape, out=None):
        """:meth:`__call__` for an image given by rows: ``rows(a, b)`` returns rows a..b-1 (all
        columns) of the HxW bicubic-upscaled image of ``shape``, and is asked for a band of
        tiles at a time, so the image itself need never be whole in memory. Writes into
        ``out`` (float64, ``shape``) if given; returns the estimate."""
        height, width = (int(n) for n in shape)
        if out is None:
            out = np.empty((height, width))
        (top, bottom), (left, right) = frame = self._frame()
        if self.border == "replicate":
            padded = _replicated(rows, (height, width), frame)
            self._run(padded, out)
            return out
        if height < self.receptive_field[0] or width < self.receptive_field[1]:
            field_r, field_c = self.receptive_field
            raise DataError(f"image {height}x{width} is smaller than the net's "
                            f"{field_r}x{field_c} receptive field (border='bicubic')")

        def keep_frame(a, kept, band):  # the bicubic values in the side frames of these rows
            out[a + top:a + top + kept, :left] = band[top:top + kept, :left]
            out[a + top:a + top + kept, width - right:] = band[top:top + kept, width - right:]
        self._run(rows, out[top:height - bottom, left:width - right], keep_frame)
        if top:
            out[:top] = rows(0, top)
        if bottom:
            out[height - bottom:] = rows(height - bottom, height)
        return out

    def forward_valid(self, x):
        """The net's raw output for a 2-D input: float64, smaller by ``lost`` pixels (tiled as
        the budget requires, with the same values as one pass)."""
        x = np.asarray(x)
        field_r, field_c = self.receptive_field
        if x.ndim != 2 or x.shape[0] < field_r or x.shape[1] < field_c:
            raise DataError(f"SRNet: the net needs a 2-D input of at least "
                            f"{self.receptive_field[0]}x{self.receptive_field[1]} pixels, got "
                            f"shape {x.shape}")
        out = np.empty((x.shape[0] - self.lost[0], x.shape[1] - self.lost[1]))
        self._run(lambda a, b: x[a:b], out)
        return out

    def _run(self, rows, out, on_band=None):
        """Fill ``out`` with the net's valid output for the input whose rows ``rows(a, b)``
        gives (``out``'s size plus ``lost``), one band of tiles at a time; ``on_band(a, kept,
        band)`` sees each band's input rows before the net does."""
        lost_r, lost_c = self.lost
        available = out.shape[0] + lost_r
        tiles = self.tile_plan(out.shape)
        bands = {}
        for tile in tiles:
            bands.setdefault(tile.row, []).append(tile)
        with tqdm(total=len(tiles), desc="tiles", unit="tile", leave=False,
                  delay=PROGRESS_DELAY_S, disable=True if len(tiles) == 1 else None) as bar:
            for row, band_tiles in bands.items():
                kept = band_tiles[0].height
                need = kept + max(t.extra_rows for t in band_tiles) + lost_r
                band = np.asarray(rows(row, min(row + need, available)))
                if on_band is not None:
                    on_band(row, kept, band)
                with np.errstate(over="ignore"):  # beyond float32: inf, refused just below
                    band = band.astype(np.float32)
                if not np.isfinite(band).all():
                    raise DataError("SRNet: the image has values that are not finite as float32 "
                                    "(NaN, infinite, or beyond +-3.4e38)")
                if band.shape[0] < need:  # overhang rows below the image: dropped anyway
                    band = np.pad(band, ((0, need - band.shape[0]), (0, 0)), mode="edge")
                for t in band_tiles:
                    x = band[:kept + t.extra_rows + lost_r, t.col:t.col + t.width + lost_c]
                    out[row:row + kept, t.col:t.col + t.width] = self._forward(x)[:kept, :t.width]
                    bar.update()

    def _forward(self, x):
        """One pass of the net over a float32 2-D input small enough for one tile."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.engine == "opencv":
            try:
                self._cv.setInput(x[None, None])
                return self._cv.forward(self._output)[0, 0]
            except cv2.error as exc:
                raise DataError(f"OpenCV DNN failed on a {x.shape[0]}x{x.shape[1]} tile: "
                                f"{str(exc).strip().splitlines()[-1]}") from None
        blob = self._net.blobs[self._input]
        blob.reshape(1, 1, *x.shape)
        self._net.reshape()
        blob.data[0, 0] = x
        self._net.forward()
        return self._net.blobs[self._output].data[0, 0]


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


def _replicated(rows, shape, frame):
    """``rows(a, b)`` of the HxW image given by ``rows``, padded by ``frame`` ((top, bottom),
    (left, right)) with edge replication, as ``np.pad(x, frame, mode="edge")`` would be."""
    height = shape[0]
    (top, _), cols = frame

    def padded(a, b):
        index = np.clip(np.arange(a - top, b - top), 0, height - 1)
        lo, hi = int(index[0]), int(index[-1]) + 1
        block = np.asarray(rows(lo, hi))
        if hi - lo != b - a:
            block = block[index - lo]
        return np.pad(block, ((0, 0), cols), mode="edge")
    return padded


def sr_image(net, hr_uint8, scale):
    """``(hr, bicubic, sr)`` float64 images in [0, 1] scale of one uint8 HR image: ``degrade``
    (modcrop, bicubic down and up), then ``net`` on the bicubic image."""
    hr, upscaled = degrade(hr_uint8, scale)
    return hr, upscaled, net(upscaled)
