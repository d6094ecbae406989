"""Full-image super-resolution through a deploy net, with pycaffe or OpenCV's DNN module.

The deploy nets have no padding: an HxW input gives an (H-12)x(W-12) estimate. ``SRNet`` returns
an estimate of the input's size; its ``border`` says where the 6-px frame comes from.

Weights are checked against the prototxt before Caffe sees them: Caffe aborts the whole process
(glog FATAL, no exception) on a corrupt caffemodel or a layer whose blobs differ in number or
shape, so those become a one-line ``DataError`` here instead.
"""
import warnings
from pathlib import Path

import caffe
import cv2
import numpy as np
from caffe.proto import caffe_pb2
from google.protobuf import text_format
from google.protobuf.message import DecodeError

from data_prep.degrade import degrade
from core.errors import DataError

ENGINES = ("caffe", "opencv")
BORDERS = ("replicate", "bicubic")


def _check_deploy(path):
    """The deploy prototxt's path, after checking it exists and parses (Caffe would abort)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: deploy prototxt not found")
    try:
        text_format.Parse(path.read_text(), caffe_pb2.NetParameter())
    except (text_format.ParseError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a Caffe prototxt ({err})") from None
    return path


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
    """

    def __init__(self, deploy_prototxt, caffemodel=None, engine="caffe", params=None,
                 border="replicate"):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if border not in BORDERS:
            raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
        if caffemodel is None and params is None:
            raise ValueError("SRNet: give a caffemodel or params (no random-weight nets)")
        if engine == "opencv" and (caffemodel is None or params is not None):
            raise ValueError("engine='opencv' loads weights from a caffemodel file only")
        deploy = _check_deploy(deploy_prototxt)
        self.engine, self.border = engine, border
        # A weightless Caffe net gives the parameter shapes to check and the pixels lost.
        self._net = caffe.Net(str(deploy), caffe.TEST)
        self._input, self._output = self._net.inputs[0], self._net.outputs[0]
        self.lost = self._lost_pixels()
        if caffemodel is not None:
            _check_caffemodel(self._net, _read_caffemodel(caffemodel), caffemodel)
            if engine == "caffe":
                self._net.copy_from(str(caffemodel))
            else:
                self._cv = cv2.dnn.readNetFromCaffe(str(deploy), str(caffemodel))
        if params is not None:
            _copy_params(self._net, params, complete=caffemodel is None)

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

    def __call__(self, upscaled):
        """SR estimate (float64, [0, 1] scale, neither clipped nor quantised) of a 2-D
        bicubic-upscaled image (as ``degrade`` returns), of the same size."""
        x = np.asarray(upscaled, dtype=np.float64)
        if x.ndim != 2 or x.size == 0:
            raise ValueError(f"SRNet: need a non-empty 2-D image, got shape {x.shape}")
        frame = self._frame()
        if self.border == "replicate":
            return self.forward_valid(np.pad(x, frame, mode="edge"))
        if any(side < field for side, field in zip(x.shape, self.receptive_field)):
            rows, cols = self.receptive_field
            raise DataError(f"image {x.shape[0]}x{x.shape[1]} is smaller than the net's "
                            f"{rows}x{cols} receptive field (border='bicubic')")
        (top, bottom), (left, right) = frame
        out = x.copy()
        out[top:x.shape[0] - bottom, left:x.shape[1] - right] = self.forward_valid(x)
        return out

    def forward_valid(self, x):
        """The net's raw output for a 2-D input: float64, smaller by ``lost`` pixels."""
        x = np.asarray(x, dtype=np.float32)
        if self.engine == "opencv":
            self._cv.setInput(x[None, None])
            return self._cv.forward(self._output)[0, 0].astype(np.float64)
        blob = self._net.blobs[self._input]
        blob.reshape(1, 1, *x.shape)
        self._net.reshape()
        blob.data[0, 0] = x
        self._net.forward()
        return self._net.blobs[self._output].data[0, 0].astype(np.float64)


def sr_image(net, hr_uint8, scale):
    """``(hr, bicubic, sr)`` float64 images in [0, 1] scale of one uint8 HR image: ``degrade``
    (modcrop, bicubic down and up), then ``net`` on the bicubic image."""
    hr, upscaled = degrade(hr_uint8, scale)
    return hr, upscaled, net(upscaled)
