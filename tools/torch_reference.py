"""The PyTorch reference of the SRCNN 9-1-5 training step (CPU, or CUDA for make gpu-check), for
the benchmarks only.

Same geometry as the generated Caffe net (valid convolutions f1 n1 -> act -> f2 n2 -> act -> f3 1),
the same Gaussian init, Caffe's EuclideanLoss scaling (sum / 2N, times loss_weight) and the same
per-layer learning rates (lr_mult x base_lr) under momentum SGD or Nesterov. Only
the torch engine of ``tools.bench_engines`` imports this module: the rest of the project does not need torch.
"""
import torch
from torch import nn

from core.activations import ACTIVATIONS


def activation(act, cfg, channels):
    """The torch module for one of the config's activations (training-time behaviour)."""
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}")
    return ACTIVATIONS[act].torch(cfg, channels)


def conv(cfg, c_in, c_out, kernel):
    """A valid convolution with the paper's init: N(0, init_std) weights, zero biases."""
    layer = nn.Conv2d(c_in, c_out, kernel, stride=1, padding=0, bias=cfg.conv_bias)
    nn.init.normal_(layer.weight, 0.0, cfg.init_std)
    if cfg.conv_bias:
        nn.init.zeros_(layer.bias)
    return layer


def srcnn(cfg, act):
    """conv1 -> act1 -> conv2 -> act2 -> conv3, as in ``core.nets.srcnn_body``."""
    return nn.Sequential(
        conv(cfg, 1, cfg.n1, cfg.f1), activation(act, cfg, cfg.n1),
        conv(cfg, cfg.n1, cfg.n2, cfg.f2), activation(act, cfg, cfg.n2),
        conv(cfg, cfg.n2, 1, cfg.f3))


def euclidean_loss(output, label, loss_weight=1.0):
    """Caffe's EuclideanLoss: sum of squared differences / (2 N), N the batch size."""
    return loss_weight * (output - label).pow(2).sum() / (2 * output.shape[0])


def optimizer(model, cfg, solver):
    """torch.optim.SGD with Caffe's per-layer rates: conv i weights lr_mult_weights[i] x base_lr,
    biases lr_mult_biases[i] x base_lr; PReLU slopes (Caffe's default lr_mult 1) base_lr."""
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    groups = []
    for i, layer in enumerate(convs):
        groups.append({"params": [layer.weight], "lr": cfg.base_lr * cfg.lr_mult_weights[i]})
        if cfg.conv_bias:
            groups.append({"params": [layer.bias], "lr": cfg.base_lr * cfg.lr_mult_biases[i]})
    slopes = [p for m in model if isinstance(m, nn.PReLU) for p in m.parameters()]
    if slopes:
        groups.append({"params": slopes, "lr": cfg.base_lr})
    return torch.optim.SGD(groups, lr=cfg.base_lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, nesterov=solver == "nesterov")


class TrainStep:
    """One training iteration on a fixed batch: zero grads, forward, loss, backward, update."""

    def __init__(self, cfg, act, solver, data, label, seed=None, device="cpu"):
        torch.manual_seed(cfg.random_seed if seed is None else seed)
        self.cfg = cfg
        self.model = srcnn(cfg, act).train().to(device)
        self.opt = optimizer(self.model, cfg, solver)
        self.data = torch.as_tensor(data, dtype=torch.float32).contiguous().to(device)
        self.label = torch.as_tensor(label, dtype=torch.float32).contiguous().to(device)

    def __call__(self):
        self.opt.zero_grad()
        loss = euclidean_loss(self.model(self.data), self.label, self.cfg.loss_weight)
        loss.backward()
        self.opt.step()
        return loss.item()  # also waits for a GPU to finish the step
