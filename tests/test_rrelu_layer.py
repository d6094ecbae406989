"""The fused RReLU layer (tools/setup/patches/0010, config rrelu_layer=fused) gives the numbers of
the stock-layer graph it replaces (core.activations.rrelu_train) bit for bit: one layer's forward
and backward, whole training runs, and the leaky ReLU in the TEST phase."""
import caffe
import numpy as np
import pytest
from caffe import layers as L

from core.activations import rrelu_train
from core.config import DEFAULT, ConfigError
from tests.helpers import seeded_training

pytestmark = pytest.mark.blas  # numbers summed by OpenBLAS (tools/blas_kernels.py)

SHAPE = (4, 8, 37, 41)  # large enough for the OpenMP loops (>= 32768 elements)
FUSED = DEFAULT.with_overrides(["rrelu_layer=fused"])


def test_the_layer_is_built():
    assert "RReLU" in caffe.layer_type_list()


def one_activation(directory, fused, phase=caffe.TRAIN):
    """A net: Input x -> RReLU (fused layer or stock-layer graph) -> y, with backward forced."""
    n = caffe.NetSpec()
    n.x = L.Input(shape=dict(dim=list(SHAPE)))
    if fused:
        n.y = L.RReLU(n.x, rrelu_param=dict(lower=DEFAULT.rrelu_lower, upper=DEFAULT.rrelu_upper))
    else:
        rrelu_train(n, "y", n.x, DEFAULT, SHAPE)
    proto = n.to_proto()
    proto.force_backward = True
    path = directory / f"{'fused' if fused else 'graph'}.prototxt"
    path.write_text(str(proto))
    return caffe.Net(str(path), phase)


def inputs():
    """x with positives, negatives, zeros and tiny values; a top gradient with zeros and -0."""
    rng = np.random.RandomState(0)
    x = rng.normal(0, 1, SHAPE).astype(np.float32)
    x.flat[::7] = 0
    x.flat[1::11] = -1e-40  # subnormal: x / a may round to x itself or to -0
    dy = rng.normal(0, 1, SHAPE).astype(np.float32)
    dy.flat[::5] = 0
    dy.flat[2::13] = -0.0
    return x, dy


def run(net, x, dy, seed):
    caffe.set_random_seed(seed)
    net.blobs["x"].data[...] = x
    net.forward()
    net.blobs["y"].diff[...] = dy
    net.backward()
    return net.blobs["y"].data.copy(), net.blobs["x"].diff.copy()


def test_one_layer_forward_and_backward_are_the_graphs_bits(tmp_path):
    x, dy = inputs()
    graph, fused = one_activation(tmp_path, False), one_activation(tmp_path, True)
    for seed in (1, 2):  # two forward passes: new slopes each time, the same in both nets
        (gy, gdx), (fy, fdx) = run(graph, x, dy, seed), run(fused, x, dy, seed)
        assert gy.tobytes() == fy.tobytes() and gdx.tobytes() == fdx.tobytes()
    assert not np.array_equal(run(fused, x, dy, 1)[0], run(fused, x, dy, 2)[0])


def test_the_test_phase_is_the_leaky_relu(tmp_path):
    x, dy = inputs()
    fused = one_activation(tmp_path, True, caffe.TEST)
    n = caffe.NetSpec()
    n.x = L.Input(shape=dict(dim=list(SHAPE)))
    n.y = L.ReLU(n.x, negative_slope=DEFAULT.rrelu_test_slope)
    proto = n.to_proto()
    proto.force_backward = True
    (tmp_path / "leaky.prototxt").write_text(str(proto))
    leaky = caffe.Net(str(tmp_path / "leaky.prototxt"), caffe.TEST)
    for a, b in zip(run(fused, x, dy, 1), run(leaky, x, dy, 1)):
        assert a.tobytes() == b.tobytes()


def training(cfg, directory, steps=4):
    return seeded_training(cfg, "rrelu", "nesterov", directory, steps)


def test_training_with_the_fused_layer_is_bit_identical(tmp_path):
    (g_loss, g_params), (f_loss, f_params) = (training(DEFAULT, tmp_path / "graph"),
                                              training(FUSED, tmp_path / "fused"))
    assert g_loss == f_loss
    assert all(a.tobytes() == b.tobytes() for a, b in zip(g_params, f_params))
    assert len(g_params) == 6 and len(set(g_loss)) > 1


def test_the_fused_layer_draws_per_element_only():
    with pytest.raises(ConfigError, match="rrelu_draw=element"):
        DEFAULT.with_overrides(["rrelu_layer=fused", "rrelu_draw=channel"])
