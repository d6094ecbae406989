"""The one list of activations: each knows how to build itself in Caffe (generated nets) and in
PyTorch (the benchmark's reference), and how curves draw it. Adding an activation is one class
here and one entry in ``ACTIVATIONS``.

Caffe and torch are imported inside the builders: the config (which reads the names) stays free of
both, and the harness never needs torch.
"""


class Activation:
    """Base: ``caffe`` sets ``n.<name>`` to the activation of ``bottom`` in a NetSpec ``n``;
    ``torch`` returns the training-time torch module; ``style`` is the curves' line style."""

    style = "-"

    def caffe(self, n, name, bottom, train, cfg, train_shape):
        raise NotImplementedError

    def torch(self, cfg, channels):
        raise NotImplementedError

    def in_conv(self, cfg):
        """The convolution_param fields that make a TRAIN net's convolution apply this activation
        itself (act_layer=conv, our Caffe's patch 0011), or None where it cannot."""
        return None


class ReLU(Activation):
    """max(x, 0): the SRCNN release's activation."""

    def caffe(self, n, name, bottom, train, cfg, train_shape):
        from caffe import layers as L
        setattr(n, name, L.ReLU(bottom))

    def torch(self, cfg, channels):
        from torch import nn
        return nn.ReLU()

    def in_conv(self, cfg):
        from caffe.proto import caffe_pb2
        return dict(medsr_activation=caffe_pb2.ConvolutionParameter.RELU)


class Leaky(Activation):
    """x for x > 0, x * slope otherwise, with RReLU's test-time slope 2/11 in both phases."""

    style = "--"

    def caffe(self, n, name, bottom, train, cfg, train_shape):
        from caffe import layers as L
        setattr(n, name, L.ReLU(bottom, negative_slope=cfg.rrelu_test_slope))

    def torch(self, cfg, channels):
        from torch import nn
        return nn.LeakyReLU(cfg.rrelu_test_slope)


class RReLU(Leaky):
    """The paper's randomized ReLU: x/a for x < 0 with a ~ U(lower, upper) in training, the leaky
    slope 1/mean(a) = 2/11 at test time (deploy nets and the TEST phase)."""

    style = "-"

    def caffe(self, n, name, bottom, train, cfg, train_shape):
        if not train:
            return super().caffe(n, name, bottom, train, cfg, train_shape)
        if cfg.rrelu_layer == "fused":
            from caffe import layers as L
            setattr(n, name, L.RReLU(bottom, rrelu_param=dict(lower=cfg.rrelu_lower,
                                                              upper=cfg.rrelu_upper)))
            return
        rrelu_train(n, name, bottom, cfg, train_shape)

    def torch(self, cfg, channels):
        from torch import nn
        # Slope drawn per element in [1/upper, 1/lower] = [1/8, 1/3]. Caffe's net draws 1/a with
        # a ~ U(3, 8); torch draws the slope itself uniformly: the same range and the same cost per
        # element, not exactly the same distribution (irrelevant for timing).
        return nn.RReLU(1.0 / cfg.rrelu_upper, 1.0 / cfg.rrelu_lower)

    def in_conv(self, cfg):
        from caffe.proto import caffe_pb2
        return dict(medsr_activation=caffe_pb2.ConvolutionParameter.RRELU,
                    medsr_rrelu=dict(lower=cfg.rrelu_lower, upper=cfg.rrelu_upper))


class PReLU(Activation):
    """Learned slopes, initialised at 2/11: one per channel (or one shared, prelu_channel_shared)."""

    style = "-."

    def caffe(self, n, name, bottom, train, cfg, train_shape):
        from caffe import layers as L
        setattr(n, name, L.PReLU(bottom, filler=dict(type="constant", value=cfg.rrelu_test_slope),
                                 channel_shared=cfg.prelu_channel_shared))

    def torch(self, cfg, channels):
        from torch import nn
        return nn.PReLU(1 if cfg.prelu_channel_shared else channels, init=cfg.rrelu_test_slope)


def rrelu_train(n, name, bottom, cfg, shape):
    """RReLU at training time, exact in distribution: y = x for x > 0 and x/a for x < 0, with
    a ~ U(lower, upper) drawn on every forward pass (DummyData refills non-constant fillers each
    forward), per element or, with rrelu_draw=channel, per sample and channel.

    Since a > 1, y = max(x, x/a): one product and one Eltwise MAX. MAX sends the gradient to the
    larger input, so dy/dx is 1 for x > 0 and 1/a for x < 0, with the forward pass's a."""
    from caffe import layers as L
    from caffe import params as P

    def add(suffix, layer):
        setattr(n, name + suffix, layer)
        return layer

    draws = list(shape) if cfg.rrelu_draw == "element" else list(shape[:2])
    a = add("_a", L.DummyData(shape=dict(dim=draws), data_filler=dict(
        type="uniform", min=cfg.rrelu_lower, max=cfg.rrelu_upper)))
    inv_a = add("_inv_a", L.Power(a, power=-1))
    # No gradient flows into the random slopes: they are not parameters.
    if cfg.rrelu_draw == "element":
        scaled = add("_scaled", L.Eltwise(bottom, inv_a, operation=P.Eltwise.PROD,
                                          propagate_down=[True, False]))
    else:  # Scale broadcasts the (N, C) slopes over H x W
        scaled = add("_scaled", L.Scale(bottom, inv_a, axis=0, propagate_down=[True, False]))
    add("", L.Eltwise(bottom, scaled, operation=P.Eltwise.MAX))


# name -> Activation. relu and rrelu are the paper's comparison (Fig. 3); leaky (RReLU's
# deterministic equivalent) and prelu (learned slopes) are there to compare against.
ACTIVATIONS = {"relu": ReLU(), "rrelu": RReLU(), "leaky": Leaky(), "prelu": PReLU()}
