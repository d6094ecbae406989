"""SRCNN 9-1-5 nets on caffe.NetSpec: a train_val net per data set and activation, a deploy net per
activation.

Caffe has no RReLU layer, so the paper's RReLU is assembled from stock layers (see
``core.activations.rrelu_train``).
Phase-specific layers are found by building the TRAIN and the TEST net separately and merging them
(``merge_phases``): layers the two phases share appear once, the others get an ``include`` rule.
"""
import difflib

import caffe
from caffe import layers as L
from caffe import params as P
from caffe.proto import caffe_pb2

from core.activations import ACTIVATIONS

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


def conv(bottom, cfg, index, num_output, kernel, **fields):
    """A valid (unpadded) convolution with the paper's init and the config's lr_mults; without a
    bias term when cfg.conv_bias is off. ``fields``: more convolution_param fields."""
    if not cfg.conv_bias:
        return L.Convolution(bottom, num_output=num_output, kernel_size=kernel, stride=1, pad=0,
                             weight_filler=dict(type="gaussian", std=cfg.init_std), bias_term=False,
                             param=[dict(lr_mult=cfg.lr_mult_weights[index])], **fields)
    return L.Convolution(
        bottom, num_output=num_output, kernel_size=kernel, stride=1, pad=0,
        weight_filler=dict(type="gaussian", std=cfg.init_std),
        bias_filler=dict(type="constant", value=0),
        param=[dict(lr_mult=cfg.lr_mult_weights[index]), dict(lr_mult=cfg.lr_mult_biases[index])],
        **fields)


def conv_activation_supported():
    """True when this Caffe's convolutions can apply an activation themselves (patch 0011)."""
    return "medsr_activation" in caffe_pb2.ConvolutionParameter.DESCRIPTOR.fields_by_name


def conv_activation_fields(act, cfg):
    """The convolution_param fields that apply ``act`` inside a convolution (act_layer=conv);
    ValueError, in a line for the user, for an activation patch 0011 does not have."""
    fields = ACTIVATIONS[act].in_conv(cfg)
    if fields is None:
        raise ValueError(f"act_layer=conv supports relu and rrelu, not {act}: use act_layer=separate")
    return fields


def activated_conv(n, k, bottom, cfg, num_output, kernel, act, phase, train_side):
    """``n.conv<k>`` followed by ``n.act<k>``; returns the activated blob. In TRAIN nets with
    cfg.act_layer=conv the convolution applies the activation itself (our Caffe's patch 0011):
    there is no act<k>, and conv<k> holds the activated output."""
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}")
    name = f"conv{k}"
    if phase == TRAIN and cfg.act_layer == "conv":
        setattr(n, name, conv(bottom, cfg, k - 1, num_output, kernel,
                              **conv_activation_fields(act, cfg)))
        return getattr(n, name)
    setattr(n, name, conv(bottom, cfg, k - 1, num_output, kernel))
    ACTIVATIONS[act].caffe(n, f"act{k}", getattr(n, name), phase == TRAIN, cfg,
                           (cfg.batch_train, num_output, train_side, train_side))
    return getattr(n, f"act{k}")


def srcnn_body(n, data, act, phase, cfg):
    """conv1 -> act1 -> conv2 -> act2 -> conv3 on top of ``data``; returns conv3, or with
    cfg.residual conv3 plus the centre of ``data``."""
    side = cfg.patch - cfg.f1 + 1  # training feature maps: 25x25 for 33x33 patches
    act1 = activated_conv(n, 1, data, cfg, cfg.n1, cfg.f1, act, phase, side)
    act2 = activated_conv(n, 2, act1, cfg, cfg.n2, cfg.f2, act, phase, side - cfg.f2 + 1)
    n.conv3 = conv(act2, cfg, 2, 1, cfg.f3)
    if not cfg.residual:
        return n.conv3
    # Residual output (not the paper's): conv3 predicts the difference to the bicubic input, whose
    # centre (cropped by half the receptive field) is added back, so the untrained net starts at
    # bicubic instead of at black (README, "Differences from the paper": output).
    n.centre = L.Crop(data, n.conv3, axis=2, offset=cfg.receptive_field // 2)
    n.sr = L.Eltwise(n.conv3, n.centre, operation=P.Eltwise.SUM)
    return n.sr


def phase_net(cfg, act, phase, source, batch):
    """The whole net as one phase sees it: HDF5 patches, SRCNN, Euclidean loss."""
    n = caffe.NetSpec()
    n.data, n.label = L.HDF5Data(source=source, batch_size=batch, ntop=2)
    n.loss = L.EuclideanLoss(srcnn_body(n, n.data, act, phase, cfg), n.label, loss_weight=cfg.loss_weight)
    return n.to_proto()


def merge_phases(train, test):
    """One NetParameter whose TRAIN and TEST phases are ``train`` and ``test``: shared layers once,
    the rest in their original order with an ``include { phase: ... }`` rule."""
    a, b = [str(l) for l in train.layer], [str(l) for l in test.layer]
    merged = caffe_pb2.NetParameter()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        for layer in train.layer[i1:i2]:
            merged.layer.add().CopyFrom(layer)
            if tag != "equal":
                merged.layer[-1].include.add(phase=TRAIN)
        if tag != "equal":
            for layer in test.layer[j1:j2]:
                merged.layer.add().CopyFrom(layer)
                merged.layer[-1].include.add(phase=TEST)
    return merged


def train_val_net(cfg, act, dataset):
    """The train_val net of one data set; data paths are relative to the repository root."""
    train = phase_net(cfg, act, TRAIN, f"data/{dataset}/train.txt", cfg.batch_train)
    test = phase_net(cfg, act, TEST, f"data/{dataset}/test.txt", cfg.batch_test)
    net = merge_phases(train, test)
    net.name = f"SRCNN_{act}_{dataset}"
    return net


def deploy_net(cfg, act, size=(33, 33)):
    """The deploy net: one grey image in, its SR estimate out (smaller by the receptive field).
    The Input shape is nominal; reshape the ``data`` blob to any HxW before forward."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, size[0], size[1]]))
    srcnn_body(n, n.data, act, TEST, cfg)
    net = n.to_proto()
    net.name = f"SRCNN_{act}_deploy"
    return net
