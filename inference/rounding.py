"""How far a float32 evaluation of a deploy net can be from the exact one, pixel by pixel.

Caffe's convolutions are sums whose order the BLAS kernel chooses (OpenBLAS picks its kernels for
the CPU, and some sum an output in an order that depends on where it sits in the GEMM), so two
evaluations of one net on one image, tiled and whole or on two machines, may differ in the last
bits. This bounds the difference a priori, with the classic forward-error bound of a float sum
(Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., section 3.1): a sum of n
terms computed in float32, in ANY order and with or without fused multiply-adds, is within
gamma(n) * (sum of the terms' magnitudes) of the exact sum, gamma(n) = n*u / (1 - n*u),
u = 2^-24. Through the layers, in exact arithmetic (float64 here), with ``v`` a blob's exact
value and ``e`` the bound on its computed value's error:

- Convolution (n = inner dimension + 1 for the bias):
  e_out = |W| * e_in + gamma(n) * (|W| * (|v_in| + e_in) + |b|)   (* a convolution)
- ReLU with negative slope s (ReLU, the test-time RReLU, leaky) and PReLU (slope per channel):
  e_out = max(1, |s|) * e_in + u * |s| * (|v_in| + e_in)   (the product s*x is rounded once)
- Crop: e cropped alike; Eltwise SUM of two: e_out = e_a + e_b + u * (|v_a| + e_a + |v_b| + e_b).

Any two float32 evaluations then differ by at most twice the output's bound. The bound is
rigorous but pessimistic (it lets every rounding error push the same way); the tests compare
with it, and count the quantised pixels that differ (docs/exactness.md).
"""
import caffe
import numpy as np
from caffe.proto import caffe_pb2
from google.protobuf import text_format

U = 2.0 ** -24  # float32's unit roundoff


def gamma(n):
    """Higham's gamma_n for float32: the relative bound of an n-term sum in any order."""
    if n * U >= 1:
        raise ValueError(f"a sum of {n} float32 terms has no useful error bound")
    return n * U / (1 - n * U)


IM2COL_BYTES = 2 ** 27  # above this the columns are not built whole: one tap at a time instead


def _correlate(weights, x, pad):
    """Caffe's convolution (cross-correlation, stride 1, group 1) of float64 ``x`` (C, H, W) with
    ``weights`` (O, C, kh, kw), zero padding ``pad`` (rows, cols): one product over all columns
    where they fit in IM2COL_BYTES, else tap by tap."""
    out_c, channels, kh, kw = weights.shape
    x = np.pad(x, ((0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    height, width = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    if channels * kh * kw * height * width * 8 <= IM2COL_BYTES:
        windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # C, H, W, kh, kw
        columns = windows.transpose(1, 2, 0, 3, 4).reshape(height * width, -1)
        return (columns @ weights.reshape(out_c, -1).T).T.reshape(out_c, height, width)
    out = np.zeros((out_c, height * width))
    for i in range(kh):
        for j in range(kw):
            out += weights[:, :, i, j] @ x[:, i:i + height, j:j + width].reshape(channels, -1)
    return out.reshape(out_c, height, width)


def _conv(layer, params, v, e):
    param = layer.convolution_param
    if (param.group or 1) != 1 or any(s != 1 for s in param.stride) or any(d != 1 for d in param.dilation):
        raise ValueError(f"{layer.name}: no rounding bound for grouped, strided or dilated convolutions")
    pad = (param.pad_h or (param.pad[0] if param.pad else 0), param.pad_w or (param.pad[-1] if param.pad else 0))
    w = params[0]
    b = params[1] if len(params) > 1 else np.zeros(w.shape[0])
    absw = np.abs(w)
    value = _correlate(w, v, pad) + b[:, None, None]
    magnitude = _correlate(absw, np.abs(v) + e, pad) + np.abs(b)[:, None, None]
    n = int(np.prod(w.shape[1:])) + 1
    return value, _correlate(absw, e, pad) + gamma(n) * magnitude


def _slope_activation(v, e, slope):
    """ReLU with negative slope ``slope`` (a scalar, or one per channel shaped (C, 1, 1); a
    learned PReLU slope may be negative or above 1)."""
    slope = np.asarray(slope, dtype=np.float64)
    value = np.where(v > 0, v, v * slope)
    size = np.abs(slope)
    return value, np.maximum(1.0, size) * e + U * size * (np.abs(v) + e)


def _crop(layer, reference_shape, v, e):
    """Caffe's Crop of (C, H, W) blobs (Caffe's axes 1..3) to ``reference_shape``."""
    offsets = list(layer.crop_param.offset) or [0]
    index = [slice(None)] * v.ndim
    for k, dim in enumerate(range(layer.crop_param.axis - 1, v.ndim)):
        offset = offsets[k] if len(offsets) > 1 else offsets[0]
        index[dim] = slice(offset, offset + reference_shape[dim])
    return v[tuple(index)], e[tuple(index)]


def _eltwise_sum(layer, a, b):
    if layer.eltwise_param.operation != caffe_pb2.EltwiseParameter.SUM or list(layer.eltwise_param.coeff):
        raise ValueError(f"{layer.name}: no rounding bound for Eltwise other than a plain SUM")
    (va, ea), (vb, eb) = a, b
    return va + vb, ea + eb + U * (np.abs(va) + ea + np.abs(vb) + eb)


def forward_bound(deploy_prototxt, params, image):
    """``(value, bound)`` of the deploy net on the 2-D float32 ``image`` (its whole input, the
    valid convolutions' frame included): the exact output (float64) and, per output pixel, the
    most any float32 evaluation of it can differ from that. ``params`` is ``{layer: [arrays]}``
    or a pycaffe Net holding the weights."""
    proto = caffe_pb2.NetParameter()
    text_format.Merge(open(deploy_prototxt).read(), proto)
    if isinstance(params, caffe.Net):
        params = {name: [b.data for b in blobs] for name, blobs in params.params.items()}
    params = {name: [np.asarray(a, dtype=np.float64) for a in arrays] for name, arrays in params.items()}
    x = np.asarray(image, dtype=np.float32).astype(np.float64)[None]  # (1, H, W): the input is exact
    blobs = {}
    for layer in proto.layer:
        bottoms = [blobs[name] for name in layer.bottom]
        if layer.type == "Input":
            out = (x, np.zeros_like(x))
        elif layer.type == "Convolution":
            out = _conv(layer, params[layer.name], *bottoms[0])
        elif layer.type == "ReLU":
            out = _slope_activation(*bottoms[0], layer.relu_param.negative_slope)
        elif layer.type == "PReLU":
            out = _slope_activation(*bottoms[0], params[layer.name][0].reshape(-1, 1, 1))
        elif layer.type == "Crop":
            out = _crop(layer, bottoms[1][0].shape, *bottoms[0])
        elif layer.type == "Eltwise":
            out = _eltwise_sum(layer, *bottoms)
        else:
            raise ValueError(f"{layer.name}: no rounding bound for layer type {layer.type}")
        blobs[layer.top[0]] = out
    value, bound = blobs[proto.layer[-1].top[0]]
    return value[0], bound[0]
