"""The one source of truth for every hyper-parameter of the reproduction.

Nets (models/), solvers (solvers/), data sets (data_prep) and the trainer all read this config;
the committed prototxt files are generated from it. Overrides come as ``KEY=VALUE`` strings from
the command line or Make (``make train ITERS=... SET="base_lr=1e-3"``), checked against the field's
type; unknown keys and bad values are rejected with one clear line.
"""
import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path

from core.activations import ACTIVATIONS as ACTIVATION_REGISTRY
from core.datasets import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent  # the repository root: every path resolves from it

DATASETS = tuple(DEFAULTS)  # the paper's three data sets, declared in core/datasets.py
ACTIVATIONS = tuple(ACTIVATION_REGISTRY)  # relu/rrelu are the paper's; leaky/prelu compare
# Caffe 1.0's solver types, our name -> Caffe's: the paper compares the first two
SOLVERS = {"sgd": "SGD", "nesterov": "Nesterov", "adagrad": "AdaGrad", "rmsprop": "RMSProp",
           "adadelta": "AdaDelta", "adam": "Adam"}
# The solver fields each type reads besides base_lr and the learning-rate policy (Caffe's
# sgd_solvers.hpp): momentum is Adam's beta1 and AdaDelta's decay; AdaGrad and RMSProp refuse any
MOMENTUM_FREE = ("adagrad", "rmsprop")
SOLVER_FIELDS = {"sgd": ("momentum",), "nesterov": ("momentum",), "adagrad": ("delta",),
                 "rmsprop": ("rms_decay", "delta"), "adadelta": ("momentum", "delta"),
                 "adam": ("momentum", "momentum2", "delta")}


class ConfigError(ValueError):
    """A bad override or name: the message is one line meant for the user."""


@dataclass(frozen=True)
class Config:
    """SRCNN 9-1-5 x3 as in the paper, with the SRCNN Caffe release where the paper is silent."""

    # --- data (SRCNN release generate_train.m / generate_test.m) ---
    scale: int = 3  # upscaling factor: bicubic down by 3, then up by 3
    patch: int = 33  # input patch side (f_sub in the paper)
    label: int = 21  # label side: 33 - 9 - 1 - 5 + 3; the net has no padding
    stride_train: int = 14  # training patch stride
    stride_test: int = 21  # test patch stride (generate_test.m)
    data_seed: int = 0  # seed of the permutation that shuffles training patches
    # Most MiB of patches one HDF5 file (shard) holds, and what the build keeps in memory: a data
    # set whose training patches fit in one shard is shuffled as generate_train.m (one randperm),
    # a larger one in bounded memory (docs/data.md, "Shards and the shuffle")
    shard_mb: int = 256
    # Brain intensity rule. The Colin27 volume is 8-bit but uses only 0..~125: "none" keeps that
    # (network inputs reach 0.5 only, learning is ~4x slower: README, differences); "mr" stretches
    # its 0.5-99.5 percentile window to 0..255 like the prostate series.
    brain_rule: str = "mr"

    # --- net: conv f1 n1 -> act -> conv f2 n2 -> act -> conv f3 c ---
    n1: int = 64  # conv1 filters
    n2: int = 32  # conv2 filters
    f1: int = 9  # conv1 kernel
    f2: int = 1  # conv2 kernel
    f3: int = 5  # conv3 kernel
    init_std: float = 0.001  # Gaussian weight init std (paper and release); biases start at 0
    # Convolution biases (the paper's and the release's). Without them the net is positively
    # homogeneous and maps black exactly to black (README, differences: black backgrounds).
    conv_bias: bool = True
    # Residual output: add the bicubic input's centre to conv3 (VDSR-style global skip, not in the
    # paper or the release). For data where bicubic is already near-perfect (README, differences).
    residual: bool = False
    rrelu_lower: float = 3.0  # RReLU: a ~ U(lower, upper) per element at training time
    rrelu_upper: float = 8.0
    # RReLU at test time: y = x/a with a = (lower+upper)/2 = 5.5, i.e. slope 2/11; also the slope of
    # `leaky` in both phases and PReLU's initial slope.
    # Which RReLU slopes are drawn independently: "element" (every activation, as PyTorch's RReLU and
    # Caffe PR #3534) or "channel" (one per sample and channel, as Xu et al.'s a_ji can be read).
    rrelu_draw: str = "element"
    # How RReLU is built in TRAIN nets: "graph", stock layers (DummyData, Power, Eltwise PROD and
    # MAX: runs on any Caffe), or "fused", our Caffe's RReLU layer (tools/setup/patches/0010), one
    # pass each way with the graph's numbers bit for bit (element draws only).
    rrelu_layer: str = "graph"
    # Where TRAIN nets apply act1 and act2: "separate", layers of their own (any Caffe), or "conv",
    # inside conv1 and conv2 (our Caffe's patch 0011, CPU only: relu and rrelu with element
    # draws), image by image while each output is in cache, with the separate layers' numbers.
    # "auto" (what make train/grid/reproduce pass): the trainer picks conv where this Caffe, the
    # device and the activation allow it, else separate, and records its choice.
    act_layer: str = "separate"
    prelu_channel_shared: bool = False  # PReLU: one slope per channel (He et al.'s default)
    # Caffe's EuclideanLoss is sum/(2N) over a batch of N; the paper's MSE is sum/N: 2.0 gives the
    # paper's scale (and gradients twice as large). The SRCNN release's learning rates assume 1.0.
    loss_weight: float = 1.0

    # --- solver ---
    base_lr: float = 1e-4  # paper: 1e-4 for layers 1-2 ...
    lr_mult_weights: typing.Tuple[float, float, float] = (1.0, 1.0, 0.1)  # ... and 1e-5 for layer 3
    # Bias lr_mult as the SRCNN release (0.1 everywhere); the paper says nothing of biases, read
    # literally it gives biases their layer's rate: lr_mult_biases=1,1,0.1 (README, differences).
    lr_mult_biases: typing.Tuple[float, float, float] = (0.1, 0.1, 0.1)
    momentum: float = 0.9  # SGD and Nesterov (the paper's), Adam's beta1, AdaDelta's decay
    momentum2: float = 0.999  # Adam's beta2 (Caffe's default, Kingma & Ba's)
    delta: float = 1e-8  # AdaGrad, RMSProp, AdaDelta, Adam: added to the denominator (Caffe's default)
    rms_decay: float = 0.99  # RMSProp: decay of the squared-gradient average (Caffe's default)
    weight_decay: float = 0.0  # SRCNN release: none
    lr_policy: str = "fixed"  # paper: fixed learning rates; "step": x gamma every stepsize iterations
    stepsize: int = 0  # lr_policy=step: iterations between drops
    gamma: float = 0.1  # lr_policy=step: factor per drop
    batch_train: int = 128  # SRCNN release train batch
    batch_test: int = 2  # SRCNN release test batch
    max_iter: int = 10000  # short schedule for a 2-core CPU (docs/training.md); paper: 4e6
    snapshot: int = 1000  # snapshot interval (iterations)
    test_interval: int = 500  # test interval (iterations): Caffe's patch loss and our image PSNR
    test_first: int = 0  # first periodic test (0: at test_interval); the paper's curves start at 1e6
    display: int = 100  # Caffe's log interval
    random_seed: int = 1701  # Caffe's RNG: weight init, RReLU draws (reseeded per iteration)
    solver_mode: str = "CPU"  # CPU or GPU

    @property
    def rrelu_test_slope(self) -> float:
        """1 / mean(a): the deterministic slope RReLU uses at test time (2/11 by default)."""
        return 2.0 / (self.rrelu_lower + self.rrelu_upper)

    def is_test_point(self, iteration) -> bool:
        """True where the trainer scores the test images: test_first, then every test_interval
        (every test_interval from 0 when test_first is 0), and always at max_iter."""
        since = iteration - self.test_first
        return iteration == self.max_iter or (iteration > 0 and since >= 0 and
                                              since % self.test_interval == 0)

    @property
    def receptive_field(self) -> int:
        """Pixels lost per dimension by the valid convolutions (12 for 9-1-5)."""
        return self.f1 + self.f2 + self.f3 - 3

    def with_overrides(self, overrides):
        """A copy with ``KEY=VALUE`` strings applied; ConfigError on unknown keys or bad values."""
        changes = {}
        for item in overrides:
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep:
                raise ConfigError(f"override {item!r} is not KEY=VALUE")
            if key not in FIELDS:
                raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(FIELDS)}")
            changes[key] = parse_value(key, FIELDS[key], value.strip())
        cfg = dataclasses.replace(self, **changes)
        cfg.validate()
        return cfg

    def validate(self):
        """Reject combinations that cannot make a valid net or solver."""
        if self.patch - self.receptive_field != self.label:
            raise ConfigError(f"label={self.label} must equal patch - {self.receptive_field} = "
                              f"{self.patch - self.receptive_field} (the net has no padding)")
        if not 1 <= self.rrelu_lower <= self.rrelu_upper:  # RReLU is built as max(x, x/a)
            raise ConfigError("need 1 <= rrelu_lower <= rrelu_upper (slopes 1/a of at most 1)")
        if self.rrelu_draw not in ("element", "channel"):
            raise ConfigError(f"rrelu_draw must be element or channel, not {self.rrelu_draw!r}")
        if self.rrelu_layer not in ("graph", "fused"):
            raise ConfigError(f"rrelu_layer must be graph or fused, not {self.rrelu_layer!r}")
        if self.rrelu_layer == "fused" and self.rrelu_draw != "element":
            raise ConfigError("rrelu_layer=fused draws per element: use rrelu_draw=element or "
                              "rrelu_layer=graph")
        if self.act_layer not in ("separate", "conv", "auto"):
            raise ConfigError(f"act_layer must be separate, conv or auto, not {self.act_layer!r}")
        if self.act_layer == "conv" and self.rrelu_draw != "element":
            raise ConfigError("act_layer=conv draws RReLU's slopes per element: use "
                              "rrelu_draw=element or act_layer=separate")
        if self.act_layer == "conv" and self.solver_mode != "CPU":
            raise ConfigError("act_layer=conv runs on the CPU only: use act_layer=separate on a GPU")
        if self.brain_rule not in ("mr", "none"):
            raise ConfigError(f"brain_rule must be mr or none, not {self.brain_rule!r}")
        if self.lr_policy not in ("fixed", "step"):
            raise ConfigError(f"lr_policy must be fixed or step, not {self.lr_policy!r}")
        if self.lr_policy == "step" and self.stepsize <= 0:
            raise ConfigError("lr_policy=step needs stepsize > 0")
        if self.solver_mode not in ("CPU", "GPU"):
            raise ConfigError(f"solver_mode must be CPU or GPU, not {self.solver_mode!r}")
        self._check_ranges()

    def _check_ranges(self):
        """Every number finite and in its range (check_number): a NaN, infinite or negative rate,
        size or interval would otherwise be accepted and fail (or diverge) much later."""
        for key, kind in FIELDS.items():
            if kind is not bool and kind is not str:
                check_number(key, getattr(self, key))

    def as_dict(self):
        """Every field, for manifests."""
        return dataclasses.asdict(self)


FIELDS = {f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)}
# The numbers that must be above 0, and those that may be 0 (the rest are checked on their own, in
# check_number). A user's solver file is checked by the same lists (core/solvers.py,
# check_solver_param): its numeric fields that the config has no key for are here too
# (iter_size, power, stepvalue; clip_gradients is checked apart).
POSITIVE = ("scale", "patch", "label", "stride_train", "stride_test", "shard_mb", "n1", "n2", "f1",
            "f2", "f3", "init_std", "base_lr", "gamma", "loss_weight", "batch_train", "batch_test", "max_iter",
            "snapshot", "test_interval", "delta", "iter_size")
NON_NEGATIVE = ("data_seed", "random_seed", "lr_mult_weights", "lr_mult_biases", "momentum",
                "momentum2", "rms_decay", "weight_decay", "stepsize", "test_first", "display",
                "power", "stepvalue")
DECAYS = ("momentum2", "rms_decay")  # averages' decays: in [0, 1), as Caffe checks rms_decay


def check_number(key, value):
    """ConfigError unless ``value`` (a number, or a sequence of them: a per-layer key, a solver
    file's stepvalue) is finite and in ``key``'s range: POSITIVE, NON_NEGATIVE, a momentum below 1
    (the steps would grow without bound), a decay (DECAYS) below 1, a gradient clip that is not 0
    (it would clip every gradient to nothing; a negative one clips none)."""
    numbers = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not all(math.isfinite(v) for v in numbers):
        raise ConfigError(f"{key} must be finite, got {value}")
    if key in POSITIVE and any(v <= 0 for v in numbers):
        raise ConfigError(f"{key} must be positive, got {value}")
    if key in NON_NEGATIVE and any(v < 0 for v in numbers):
        raise ConfigError(f"{key} must be >= 0, got {value}")
    if key == "momentum" and not value < 1:
        raise ConfigError(f"momentum must be below 1 (the steps would grow without bound), got {value}")
    if key in DECAYS and not 0 <= value < 1:
        raise ConfigError(f"{key} must lie in [0, 1), got {value}")
    if key == "clip_gradients" and value == 0:
        raise ConfigError("clip_gradients must not be 0 (every gradient would be clipped to "
                          "nothing): a positive norm, or a negative value for no clipping")


# Config keys added after runs had been made, with the value that gives the behaviour from before
# them: a manifest without one was trained with that value (resume and comparisons read it so).
ADDED_KEYS = {"residual": False, "rrelu_layer": "graph", "act_layer": "separate",
              "momentum2": 0.999, "delta": 1e-8, "rms_decay": 0.99, "shard_mb": 256}


# Keys that choose how Caffe computes, not what: every choice gives the same numbers bit for bit
# (tests/test_caffe_patches.py, tests/test_conv_activation.py), so a run may resume under another.
BUILD_ONLY_KEYS = ("rrelu_layer", "act_layer")


def with_added_keys(config):
    """A manifest's config dict with the keys it predates filled in (ADDED_KEYS)."""
    return {**ADDED_KEYS, **config}


def parse_value(key, kind, text):
    """Parse one override value as the field's type."""
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if typing.get_origin(kind) is tuple:
            items = [float(v) for v in text.split(",")]
            if len(items) != len(typing.get_args(kind)):
                raise ValueError
            return tuple(items)
        return kind(text)
    except ValueError:
        shape = "comma-separated floats (3)" if typing.get_origin(kind) is tuple else kind.__name__
        raise ConfigError(f"{key}={text!r}: expected {shape}") from None


def check_name(kind, name):
    """Raise ConfigError unless ``name`` is a known data set, activation or solver."""
    known = {"dataset": DATASETS, "activation": ACTIVATIONS, "solver": tuple(SOLVERS)}[kind]
    if name not in known:
        raise ConfigError(f"unknown {kind} {name!r}; choose from {', '.join(known)}")
    return name


DEFAULT = Config()

# Settings of one default data set's runs, applied over DEFAULT and under the user's KEY=VALUE
# overrides. Each is a flag the README's "Differences from the paper" explains, chosen from the
# curves in docs/notebook/2026-11-25-schedule.md (docs/training.md, "The default schedule").
DATASET_SETTINGS = {
    # Brain's test SSIM peaks near 6000-7000 iterations and then falls while PSNR still rises
    # (the net's errors move into the dark, low-variance regions SSIM weighs most): stop there.
    "brain": ("max_iter=6000",),
    "prostate": (),
    # Bicubic is already within 1.5 grey levels RMS on the smooth film mammograms: the paper's net,
    # which must first learn an almost exact identity, stays below it for tens of thousands of
    # iterations. A residual output starts at bicubic; it needs weights large enough to carry a
    # gradient (init_std) and ten times the rates to gain within the schedule.
    "breast": ("residual=true", "init_std=0.05", "base_lr=1e-3"),
}


# Settings of each solver type over the data set's, under the user's overrides: the paper's 1e-4
# is a rate for SGD's steps, not for an adaptive method's, whose steps are about base_lr in size.
# Each is the setting of Caffe's own example solver of that type (examples/mnist/: lenet_solver_adam,
# mnist_autoencoder_solver_adagrad, lenet_solver_rmsprop, lenet_adadelta_solver); AdaGrad and
# RMSProp take no momentum (Caffe aborts on one).
SOLVER_SETTINGS = {
    "adam": ("base_lr=1e-3",),
    "adagrad": ("base_lr=1e-2", "momentum=0"),
    "rmsprop": ("base_lr=1e-2", "momentum=0", "rms_decay=0.98"),
    "adadelta": ("base_lr=1.0", "momentum=0.95", "delta=1e-6"),
}


def dataset_config(dataset, overrides=(), base=DEFAULT, solver=None):
    """The config of ``dataset``'s runs (with ``solver``: of that solver type's): ``base``, the
    data set's DATASET_SETTINGS (none for a user's own data set), the solver's SOLVER_SETTINGS,
    then ``overrides``; ConfigError on a bad override, or a momentum the solver cannot take."""
    cfg = base.with_overrides([*DATASET_SETTINGS.get(dataset, ()), *SOLVER_SETTINGS.get(solver, ()),
                               *overrides])
    if solver in MOMENTUM_FREE:
        check_momentum_free(solver, SOLVERS[solver], cfg.momentum)
    return cfg


def check_momentum_free(name, solver_type, momentum):
    """ConfigError when Caffe's ``solver_type`` refuses a momentum and gets one: AdaGrad and
    RMSProp (MOMENTUM_FREE) abort on any (sgd_solvers.hpp). ``name`` says whose it is."""
    if solver_type in (SOLVERS[s] for s in MOMENTUM_FREE) and momentum != 0:
        raise ConfigError(f"{name} takes no momentum (Caffe refuses one): momentum=0, not {momentum}")


# Through-plane super-resolution of a thick-slice scan, trained on the scan's own in-plane slices
# (tools/thickslice.py, docs/thickslice.md). Its runs take these over DEFAULT and under the user's
# overrides. The paper's SGD at 1e-4 from init_std 0.001 barely moves in minutes; a residual net
# starts at the cubic interpolation and Adam's steps are base_lr in size from the first
# iteration (the measurements behind each value: docs/thickslice.md).
THICKSLICE_SETTINGS = (
    "residual=true",  # start at the interpolation: only the through-plane detail is to learn
    "init_std=0.05",  # weights large enough to carry a gradient through a residual net (as breast)
    "max_iter=6000",  # minutes on 2 cores; the gain over a spline still grew from 3000 to here
    "stride_train=6",  # one scan holds few slices: denser patches than the release's 14
    "snapshot=500",  # an interrupted run resumes from at most this far back
    "test_interval=100000",  # the run's own check (held-out slices) once, at the end
    "act_layer=auto",  # the trainer's fastest layers wherever it is run from, as make passes
)
THICKSLICE_ACT = "rrelu"  # the paper's activation
THICKSLICE_SOLVER = "adam"  # at Caffe's example base_lr (SOLVER_SETTINGS); see THICKSLICE_SETTINGS
THICKSLICE_PROFILE = "gaussian"  # MR slice profiles are bell-shaped; "boxcar" for an ideal slab
# The through-plane pass also runs the net on each reformat mirrored along the slice axis and
# averages (inference.through_plane.mirrored_too): twice the pass, a fraction of the training.
THICKSLICE_FLIP = True
