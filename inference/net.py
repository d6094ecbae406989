"""Super-resolution through a deploy net, with pycaffe, OpenCV's DNN module or ONNX Runtime, tile
by tile.

The deploy nets have no padding: an HxW input gives an (H-12)x(W-12) estimate. ``SRNet`` returns
an estimate of the input's size; its ``border`` says where the 6-px frame comes from.

Any image size in bounded memory: the net runs over tiles whose size comes from a memory budget
(``budget_mb``), each read with the halo its valid convolutions need (``lost``: 12 px for 9-1-5,
measured on the net, not written down) so that every output pixel sees exactly the input pixels
it sees in one whole-image pass. The result is the same, bit for bit on the CPU, as one pass
over the whole image wherever that fits (tests/test_tiling.py); two library details are steered
around for that (``inference.tiles`` says which and why). An image that fits the budget is one
tile: the same single pass as before tiling existed. No tile lets a blob (im2col buffers
included) pass Caffe's 2^31 - 1 element limit, where Caffe aborts the process.

Weights are checked against the prototxt before Caffe sees them (``inference.caffemodel``): Caffe
aborts the whole process (glog FATAL, no exception) on a corrupt caffemodel or a layer whose
blobs differ in number or shape, so those become a one-line ``DataError`` here instead; so do
inputs Caffe would abort on (a net input of another channel count, an image smaller than the
receptive field) or that would give NaN (values that are not finite as float32).
"""
import caffe
import cv2
import numpy as np
from tqdm import tqdm

from core.errors import DataError
from data_prep.degrade import degrade
from inference.caffemodel import check_caffemodel, check_deploy, copy_params, read_caffemodel
from inference.tiles import BORDERS, DEFAULT_BUDGET_MB, ENGINES, TilePlanner

PROGRESS_DELAY_S = 3.0  # a progress bar over tiles appears for images that take longer


class SRNet:
    """A deploy net that maps a bicubic-upscaled image to its SR estimate of the same size.

    Args:
        deploy_prototxt: a deploy net (Input ``data`` 1x1xHxW, one output blob, ``conv3``).
        caffemodel: trained weights; checked against the prototxt (DataError on mismatch).
        engine: "caffe" (pycaffe, in Caffe's current CPU/GPU mode), "opencv" (cv2.dnn, needs
            a caffemodel file) or "onnx" (ONNX Runtime, on the CPU, running the graph that
            ``make export`` writes: :meth:`to_onnx`).
        params: ``{layer name: [arrays or pycaffe Blobs]}`` copied over the weights, engines
            "caffe" and "onnx": lets the trainer score its current weights without writing a file.
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
        deploy, proto = check_deploy(deploy_prototxt)
        self._proto = proto
        self.engine, self.border, self.budget_mb = engine, border, float(budget_mb)
        # A weightless Caffe net gives the parameter shapes to check and the pixels lost.
        self._net = caffe.Net(str(deploy), caffe.TEST)
        self._input, self._output = self._net.inputs[0], self._net.outputs[0]
        self._check_channels(deploy)
        self.lost = self._lost_pixels()
        self._tiles = TilePlanner.for_net(self._net, proto, engine, self.lost, self.budget_mb)
        self.floats_per_pixel = self._tiles.floats_per_pixel
        if caffemodel is not None:
            check_caffemodel(self._net, read_caffemodel(caffemodel), caffemodel)
            self._net.copy_from(str(caffemodel))  # engine "opencv" too: weights() and to_onnx()
            if engine == "opencv":
                self._cv = cv2.dnn.readNetFromCaffe(str(deploy), str(caffemodel))
        if params is not None:
            copy_params(self._net, params, complete=caffemodel is None)
        if engine == "onnx":
            self._ort = _onnx_runner(self.to_onnx())

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

    @property
    def receptive_field(self):
        """(rows, cols) of input pixels that one output pixel sees (13x13 for 9-1-5)."""
        return tuple(n + 1 for n in self.lost)

    def _frame(self):
        """((top, bottom), (left, right)) widths of the frame the net does not produce."""
        return tuple((n // 2, n - n // 2) for n in self.lost)

    def weights(self):
        """``{layer: [float32 arrays]}``: the weights the net runs with."""
        return {name: [b.data.copy() for b in blobs] for name, blobs in self._net.params.items()}

    def to_onnx(self, metadata=None):
        """The net and its weights as an ONNX ModelProto (``inference.onnx_graph.to_onnx``)."""
        from inference.onnx_graph import to_onnx
        return to_onnx(self._net, self._proto, self.weights(), metadata)

    # ------------------------------------------------------------------------ tiling

    def max_tile_pixels(self):
        """The most input pixels one tile may have (``inference.tiles.TilePlanner``)."""
        return self._tiles.max_tile_pixels()

    def tile_plan(self, shape):
        """The tiles covering a valid output of ``shape`` (rows, cols), row by row; one tile
        when the whole image fits (``inference.tiles.TilePlanner``)."""
        return self._tiles.tile_plan(shape)

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
        if self.engine == "onnx":
            return self._ort(x)
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


def _onnx_runner(model):
    """A function running one 2-D float32 tile through ``model`` in ONNX Runtime; its failures
    (out of memory, an input it refuses) become one-line DataErrors."""
    from inference.onnx_graph import ort_session
    session = ort_session(model)
    source, target = session.get_inputs()[0].name, session.get_outputs()[0].name

    def run(x):
        try:
            return session.run([target], {source: x[None, None]})[0][0, 0]
        except Exception as exc:  # onnxruntime's own classes (Fail, RuntimeException, ...)
            raise DataError(f"ONNX Runtime failed on a {x.shape[0]}x{x.shape[1]} tile: "
                            f"{str(exc).strip().splitlines()[-1]}") from None
    return run


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
