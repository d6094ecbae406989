"""A Caffe deploy net and its weights as an ONNX graph (opset 13, float32, any height and width),
and an ONNX Runtime session over it: what ``make export`` writes and ``--engine onnx`` runs.

The graph is built layer by layer from the deploy net, not through a converter (none installs
beside Debian's protobuf, and none knows the test-time RReLU). Caffe's blobs are (out, in, kh, kw)
like ONNX's OIHW and both convolutions are cross-correlations, so weights go over as they are.
Translated: Input, Convolution, ReLU (Relu, or LeakyRelu for a negative slope: the test-time
RReLU, 2/11, and leaky), PReLU, Crop and Eltwise SUM (the residual variant's output). Any other
layer, or a field of these that would change what they compute and is not translated, is refused
with one line naming it (``DataError``).
"""
import numpy as np
import onnx
from caffe.proto import caffe_pb2
from onnx import TensorProto, helper, numpy_helper

from core.errors import DataError

OPSET = 13
# The mark of an ONNX file this project wrote (core.outputs), kept as the first files carry it
# (models/reference/*/model.onnx, users' exports) though export now lives in inference/.
PRODUCER = "medsr-caffe eval.export"
# Fields read below, or that change nothing at inference (fillers, learning rates, engine).
CONV_FIELDS = {"num_output", "bias_term", "pad", "pad_h", "pad_w", "kernel_size", "kernel_h",
               "kernel_w", "stride", "stride_h", "stride_w", "dilation", "group", "axis",
               "weight_filler", "bias_filler", "engine"}
LAYER_FIELDS = {"Input": {"input_param"},
                "Convolution": {"convolution_param"},
                "ReLU": {"relu_param"},
                "PReLU": {"prelu_param"},
                "Crop": {"crop_param"},
                "Eltwise": {"eltwise_param"}}
# LayerParameter fields that never change a TEST forward pass
NEUTRAL = {"name", "type", "bottom", "top", "phase", "param", "blobs", "propagate_down",
           "include", "exclude", "loss_weight"}


def refuse(layer, why):
    raise DataError(f"layer {layer.name!r} ({layer.type}): {why}; no ONNX translation")


def _check_fields(layer):
    """Refuse a layer type or a parameter message this module does not translate."""
    if layer.type not in LAYER_FIELDS:
        raise DataError(f"layer {layer.name!r} has type {layer.type}, which has no ONNX "
                        f"translation here (translated: {', '.join(LAYER_FIELDS)})")
    extra = {f.name for f, _ in layer.ListFields()} - NEUTRAL - LAYER_FIELDS[layer.type]
    if extra:
        refuse(layer, f"sets {', '.join(sorted(extra))}")
    if layer.type == "Convolution":
        extra = {f.name for f, _ in layer.convolution_param.ListFields()} - CONV_FIELDS
        if extra:  # e.g. patch 0011's in-convolution activation, a TRAIN-net-only field
            refuse(layer, f"convolution_param sets {', '.join(sorted(extra))}")


class Graph:
    """The ONNX nodes and initializers so far, and which ONNX value holds each Caffe blob now
    (an in-place layer's top replaces its bottom)."""

    def __init__(self):
        self.nodes, self.initializers, self.values, self._names = [], [], {}, set()

    def unique(self, name):
        """``name``, or ``name_<k>`` if already taken (in-place layers reuse blob names)."""
        base, k = name, 1
        while name in self._names:
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name

    def constant(self, name, array):
        name = self.unique(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, name, **attrs):
        out = self.unique(name)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def _pair(layer, repeated, h, w, default):
    """(rows, cols) of a Caffe spatial field: ``x_h``/``x_w`` if set, else the repeated field
    (one value for both, or one each), else ``default``."""
    if h or w:
        return int(h), int(w)
    values = list(repeated)
    if len(values) > 2:
        refuse(layer, "not a 2-D convolution")
    if not values and default is None:
        refuse(layer, "no kernel size")
    return (int(values[0]), int(values[-1])) if values else (default, default)


def _convolution(g, layer, x, params):
    p = layer.convolution_param
    if p.axis != 1:
        refuse(layer, f"convolution axis {p.axis}")
    kh, kw = _pair(layer, p.kernel_size, p.kernel_h, p.kernel_w, None)
    pad = _pair(layer, p.pad, p.pad_h, p.pad_w, 0)
    # Stride, dilation and groups are left out: inference.rounding (the bound every export is
    # verified against) has none for them, and a Crop's size difference is fixed only at stride 1.
    if (_pair(layer, p.stride, p.stride_h, p.stride_w, 1) != (1, 1)
            or _pair(layer, p.dilation, 0, 0, 1) != (1, 1) or (p.group or 1) != 1):
        refuse(layer, "a strided, dilated or grouped convolution")
    inputs = [x, g.constant(f"{layer.name}.weight", params[0].astype(np.float32))]
    if p.bias_term:
        inputs.append(g.constant(f"{layer.name}.bias", params[1].astype(np.float32)))
    return g.node("Conv", inputs, layer.top[0], kernel_shape=[kh, kw], pads=[*pad, *pad])


def _relu(g, layer, x, params):
    slope = layer.relu_param.negative_slope
    if slope == 0:
        return g.node("Relu", [x], layer.top[0])
    # Caffe: x > 0 ? x : x * slope with the float32 slope, as LeakyRelu computes it
    return g.node("LeakyRelu", [x], layer.top[0], alpha=float(np.float32(slope)))


def _prelu(g, layer, x, params):
    slopes = params[0].astype(np.float32)
    # one slope per channel broadcasts as (C, 1, 1) over N x C x H x W; a shared one as (1,)
    shape = (1,) if layer.prelu_param.channel_shared else (slopes.size, 1, 1)
    return g.node("PRelu", [x, g.constant(f"{layer.name}.slope", slopes.reshape(shape))],
                  layer.top[0])


def _crop(g, layer, x, gaps, rank=4):
    """Caffe's Crop: ``x`` cut to the size of the reference blob from ``axis`` on, at ``offset``
    (one for every axis, or one each). ``gaps``: per axis, how much smaller the reference is; with
    stride-1 convolutions it is the same at every input size, so the cut is a Slice with ends
    counted from the end and the graph needs no Shape node (OpenCV 4.6 reads none of a free size).
    """
    axis = layer.crop_param.axis % rank
    axes = list(range(axis, rank))
    offsets = list(layer.crop_param.offset) or [0]
    if len(offsets) not in (1, len(axes)):
        refuse(layer, f"{len(offsets)} offsets for {len(axes)} axes")
    starts = offsets * len(axes) if len(offsets) == 1 else offsets
    rest = [gaps[a] - s for a, s in zip(axes, starts)]  # what is cut after the kept part
    if min(rest) < 0:
        refuse(layer, "the offset reaches past the blob")
    ends = [-r if r else np.iinfo(np.int64).max for r in rest]
    name = layer.top[0]
    return g.node("Slice", [x, g.constant(f"{name}.starts", np.array(starts, np.int64)),
                            g.constant(f"{name}.ends", np.array(ends, np.int64)),
                            g.constant(f"{name}.axes", np.array(axes, np.int64))], name)


def _eltwise(g, layer, bottoms):
    p = layer.eltwise_param
    if p.operation != caffe_pb2.EltwiseParameter.SUM or any(c != 1 for c in p.coeff):
        refuse(layer, "only a plain Eltwise SUM is translated")
    out = bottoms[0]
    for k, b in enumerate(bottoms[1:], 1):  # Caffe adds them one after the other, in order
        out = g.node("Add", [out, b], layer.top[0] if k == len(bottoms) - 1 else
                     f"{layer.top[0]}.partial{k}")
    return out


def _translate(g, layer, params, shapes):
    """The ONNX value of ``layer``'s top, after adding its nodes to ``g``; ``shapes``: the
    pycaffe net's blob shapes at its nominal input size."""
    _check_fields(layer)
    if len(layer.top) != 1:
        refuse(layer, f"{len(layer.top)} tops")
    bottoms = [g.values[b] for b in layer.bottom]
    if layer.type == "Convolution":
        return _convolution(g, layer, bottoms[0], params[layer.name])
    if layer.type == "ReLU":
        return _relu(g, layer, bottoms[0], params)
    if layer.type == "PReLU":
        return _prelu(g, layer, bottoms[0], params[layer.name])
    if layer.type == "Crop":
        cut, reference = (shapes[b] for b in layer.bottom)
        return _crop(g, layer, bottoms[0], [c - r for c, r in zip(cut, reference)])
    return _eltwise(g, layer, bottoms)


def to_onnx(net, proto, params, metadata=None):
    """The ONNX ModelProto of a pycaffe deploy ``net`` (for its layers and blob shapes), its
    NetParameter ``proto`` and weights ``params`` (``{layer: [arrays]}``): input and output named
    as the net's, N x C x height x width with the batch, height and width free. ``metadata``:
    ``{key: value}`` for ``metadata_props`` (values as strings). DataError, one line naming the
    layer, for a layer it cannot translate."""
    source, target = net.inputs[0], net.outputs[0]
    channels_in, channels_out = net.blobs[source].data.shape[1], net.blobs[target].data.shape[1]
    g = Graph()
    shapes = {name: blob.data.shape for name, blob in net.blobs.items()}
    g.values[source] = g.unique(source)
    for layer in proto.layer:
        if layer.name not in net.layer_dict or layer.type == "Input":  # other phases; the input
            continue
        g.values[layer.top[0]] = _translate(g, layer, params, shapes)
    graph = helper.make_graph(
        g.nodes, proto.name or "deploy",
        [helper.make_tensor_value_info(g.values[source], TensorProto.FLOAT,
                                       ["batch", int(channels_in), "height", "width"])],
        [helper.make_tensor_value_info(g.values[target], TensorProto.FLOAT,
                                       ["batch", int(channels_out), "out_height", "out_width"])],
        initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=PRODUCER)
    model.ir_version = 8  # ONNX 1.10's; readers older than onnx 1.17's default (10) take it
    helper.set_model_props(model, {str(k): str(v) for k, v in (metadata or {}).items()})
    return model


def check(model):
    """onnx.checker's full check (types and shapes inferred through every node)."""
    onnx.checker.check_model(model, full_check=True)


def ort_session(model):
    """An ONNX Runtime CPU session over ``model`` (a ModelProto, bytes or a path)."""
    import onnxruntime
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not ours to show
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
