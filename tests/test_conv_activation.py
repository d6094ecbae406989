"""Activations inside the convolution (tools/setup/patches/0011, config act_layer=conv) give the
numbers of the separate layers they replace, bit for bit: one convolution on each of its CPU paths
(images in parallel, one image, the direct convolution), both phases, and whole training runs."""
import caffe
import numpy as np
import pytest
from caffe import layers as L
from caffe.proto import caffe_pb2

from core.activations import ACTIVATIONS
from core.config import DEFAULT, ConfigError
from core.nets import conv_activation_supported, train_val_net
from tests.helpers import seeded_training

pytestmark = pytest.mark.blas  # numbers summed by OpenBLAS (tools/blas_kernels.py)

IN_CONV = DEFAULT.with_overrides(["act_layer=conv"])
# (images, outputs): images in parallel (0006), one image (Caffe's loop), few outputs (0002).
PATHS = {"parallel": (4, 8), "one_image": (1, 8), "direct": (4, 2)}


def test_the_field_is_built():
    assert conv_activation_supported()


def conv_net(directory, act, in_conv, images, outputs, phase):
    """Input x -> 3x3 convolution -> act (inside it, or a layer of its own) -> y, backward forced."""
    n = caffe.NetSpec()
    n.x = L.Input(shape=dict(dim=[images, 5, 23, 19]))
    fields = ACTIVATIONS[act].in_conv(DEFAULT) if in_conv else {}
    n.conv = L.Convolution(n.x, num_output=outputs, kernel_size=3, **fields)
    if in_conv:
        top = "conv"
    elif act == "relu":
        n.y = L.ReLU(n.conv)
        top = "y"
    else:  # our RReLU layer (0010), bit-identical to the stock-layer graph (test_rrelu_layer.py)
        n.y = L.RReLU(n.conv, rrelu_param=dict(lower=DEFAULT.rrelu_lower, upper=DEFAULT.rrelu_upper))
        top = "y"
    proto = n.to_proto()
    proto.force_backward = True
    path = directory / f"{act}_{in_conv}_{images}_{outputs}_{phase}.prototxt"
    path.write_text(str(proto))
    return caffe.Net(str(path), phase), top


def run(net_top, seed):
    """Forward and backward with fixed weights, inputs and top gradient; every result's bytes."""
    net, top = net_top
    rng = np.random.RandomState(0)
    weights, bias = net.params["conv"]
    weights.data[...] = rng.normal(0, 0.3, weights.data.shape)
    bias.data[...] = rng.normal(0, 0.1, bias.data.shape)
    weights.data[0], bias.data[0] = 0, 0  # an output channel of exact zeros
    x = rng.normal(0, 1, net.blobs["x"].data.shape).astype(np.float32)
    x.flat[::7] = 0
    dy = rng.normal(0, 1, net.blobs[top].data.shape).astype(np.float32)
    dy.flat[::5] = 0
    dy.flat[2::13] = -0.0
    caffe.set_random_seed(seed)
    net.blobs["x"].data[...] = x
    net.forward()
    net.blobs[top].diff[...] = dy
    for blob in (weights, bias):
        blob.diff[...] = 0
    net.backward()
    return [a.tobytes() for a in (net.blobs[top].data, net.blobs["x"].diff, weights.diff, bias.diff)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("act", ["relu", "rrelu"])
@pytest.mark.parametrize("phase", [caffe.TRAIN, caffe.TEST])
def test_one_convolution_is_the_separate_layers_bits(tmp_path, act, path, phase):
    images, outputs = PATHS[path]
    separate = conv_net(tmp_path, act, False, images, outputs, phase)
    inside = conv_net(tmp_path, act, True, images, outputs, phase)
    for seed in (1, 2):  # RReLU: new slopes on every pass, the same in both nets
        assert run(inside, seed) == run(separate, seed)
    if act == "rrelu" and phase == caffe.TRAIN:
        assert run(inside, 1)[0] != run(inside, 2)[0]


def test_rrelu_draws_without_the_block_wise_generator_are_the_separate_layers_bits(tmp_path,
                                                                                  monkeypatch):
    """With patch 0008's block-wise draws off, the parallel path draws all of RReLU's slopes at
    once on the calling thread instead of image by image: the same numbers again."""
    monkeypatch.setenv("MEDSR_FAST_RNG", "0")
    images, outputs = PATHS["parallel"]
    separate = conv_net(tmp_path, "rrelu", False, images, outputs, caffe.TRAIN)
    inside = conv_net(tmp_path, "rrelu", True, images, outputs, caffe.TRAIN)
    assert run(inside, 3) == run(separate, 3)


def test_a_second_pass_draws_what_the_separate_layer_draws(tmp_path):
    """Image by image, the draws leave Caffe's generator where RReLU's one call leaves it."""
    images, outputs = PATHS["parallel"]
    results = []
    for in_conv in (False, True):
        net, top = conv_net(tmp_path, "rrelu", in_conv, images, outputs, caffe.TRAIN)
        run((net, top), 4)
        net.forward()  # no reseed: the generator continues
        results.append(net.blobs[top].data.tobytes())
    assert results[0] == results[1]


def training(cfg, act, solver, directory, steps=4):
    losses, params = seeded_training(cfg, act, solver, directory, steps)
    return losses, [p.tobytes() for p in params]


@pytest.mark.parametrize("act,solver", [("relu", "sgd"), ("rrelu", "nesterov")])
def test_training_with_activations_in_the_convolutions_is_bit_identical(tmp_path, act, solver):
    (s_loss, s_params), (c_loss, c_params) = (training(DEFAULT, act, solver, tmp_path / "separate"),
                                              training(IN_CONV, act, solver, tmp_path / "conv"))
    assert s_loss == c_loss and s_params == c_params
    assert len(s_params) == 6 and len(set(s_loss)) > 1


def test_the_train_net_has_no_activation_layers_and_the_test_phase_keeps_them():
    net = train_val_net(IN_CONV, "rrelu", "prostate")
    train = [l for l in net.layer if not any(r.phase == caffe_pb2.TEST for r in l.include)]
    test = [l for l in net.layer if not any(r.phase == caffe_pb2.TRAIN for r in l.include)]
    assert [l.type for l in train].count("Convolution") == 3
    assert not any(l.type in ("ReLU", "RReLU", "DummyData", "Eltwise") for l in train)
    assert [l.type for l in test].count("ReLU") == 2
    assert [l.convolution_param.medsr_activation for l in train if l.name == "conv3"] == [0]


def test_unsupported_settings_are_refused():
    with pytest.raises(ConfigError, match="rrelu_draw=element"):
        DEFAULT.with_overrides(["act_layer=conv", "rrelu_draw=channel"])
    with pytest.raises(ConfigError, match="CPU only"):
        DEFAULT.with_overrides(["act_layer=conv", "solver_mode=GPU"])
    with pytest.raises(ValueError, match="relu and rrelu"):
        train_val_net(IN_CONV, "prelu", "prostate")
