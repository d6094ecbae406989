"""Generated nets and solvers: they load, have the paper's geometry, and RReLU is exact in
distribution and gradient."""
import warnings

import caffe
import numpy as np
import pytest
from google.protobuf import text_format
from scipy import stats

from caffe.proto import caffe_pb2
from core.config import ACTIVATIONS, DATASETS, DEFAULT, ROOT, SOLVERS, dataset_config
from tests.helpers import tiny_solver, tiny_train_val
from tools.generate import stale_files

SLOPE = np.float32(2.0 / 11.0)


def test_committed_files_match_a_fresh_generation():
    assert stale_files() == [], "run `make nets` and commit the result"


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_deploy_net_maps_hxw_to_h_minus_12(act):
    net = caffe.Net(str(ROOT / f"models/srcnn_{act}_deploy.prototxt"), caffe.TEST)
    net.blobs["data"].reshape(1, 1, 40, 57)
    net.reshape()
    net.forward()
    assert net.blobs["conv3"].data.shape == (1, 1, 28, 45)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("phase", [caffe.TRAIN, caffe.TEST])
def test_train_val_nets_load_and_run(act, phase, tmp_path):
    net = caffe.Net(tiny_train_val(DEFAULT, act, tmp_path), phase)
    net.forward()
    batch = DEFAULT.batch_train if phase == caffe.TRAIN else DEFAULT.batch_test
    assert net.blobs["conv3"].data.shape == (batch, 1, DEFAULT.label, DEFAULT.label)
    assert np.isfinite(net.blobs["loss"].data).all()


def test_every_committed_net_parses():
    for dataset in DATASETS:
        for act in ACTIVATIONS:
            text = (ROOT / f"models/{dataset}/srcnn_{act}_train_val.prototxt").read_text()
            net = text_format.Parse(text, caffe_pb2.NetParameter())
            assert [l.name for l in net.layer if l.type == "Convolution"] == ["conv1", "conv2", "conv3"]


@pytest.fixture(scope="module")
def rrelu_train_net(tmp_path_factory):
    """The RReLU net in TRAIN with conv1 weights large enough that half the outputs are negative."""
    net = caffe.Net(tiny_train_val(DEFAULT, "rrelu", tmp_path_factory.mktemp("rrelu")), caffe.TRAIN)
    net.params["conv1"][0].data[...] = np.random.RandomState(3).randn(*net.params["conv1"][0].data.shape)
    net.params["conv1"][1].data[...] = -0.5
    return net


def negative_ratios(net):
    net.forward()
    x, y = net.blobs["conv1"].data, net.blobs["act1"].data
    neg = x < -1e-3  # away from 0, where y/x loses relative precision
    return x.copy(), (y[neg] / x[neg]).astype(np.float64)


def rrelu_slope_cdf(t, lower=DEFAULT.rrelu_lower, upper=DEFAULT.rrelu_upper):
    """CDF of 1/a for a ~ U(lower, upper)."""
    return np.clip((upper - 1.0 / np.asarray(t)) / (upper - lower), 0.0, 1.0)


def test_rrelu_train_slopes_follow_one_over_uniform(rrelu_train_net):
    _, ratios = negative_ratios(rrelu_train_net)
    sample = np.random.RandomState(0).choice(ratios, 20000, replace=False)
    assert stats.kstest(sample, rrelu_slope_cdf).pvalue > 0.01
    # A per-channel or per-sample draw would pass the marginal test, so check per-element variety.
    assert len(np.unique(ratios[:5000])) > 4000
    assert rrelu_slope_cdf(ratios.min()) < 0.001 and rrelu_slope_cdf(ratios.max()) > 0.999


def test_rrelu_train_draws_fresh_slopes_each_forward(rrelu_train_net):
    x1, r1 = negative_ratios(rrelu_train_net)
    x2, r2 = negative_ratios(rrelu_train_net)
    np.testing.assert_array_equal(x1, x2)  # same batch, same weights ...
    assert np.mean(np.abs(r1 - r2) > 1e-4) > 0.99  # ... new slopes


def test_rrelu_train_gradient_is_one_over_forward_a(rrelu_train_net):
    net = rrelu_train_net
    net.forward()
    x = net.blobs["conv1"].data.copy()
    a = net.blobs["act1_a"].data.copy()
    net.blobs["act1"].diff[...] = 1.0
    net.backward(start="act1")
    grad = net.blobs["conv1"].diff
    np.testing.assert_array_equal(grad[x > 0], 1.0)
    np.testing.assert_allclose(grad[x < 0], 1.0 / a[x < 0], rtol=1e-6)


def assert_leaky_slope_exact(x, y):
    np.testing.assert_array_equal(y, np.where(x > 0, x, x * SLOPE))
    assert (x < 0).sum() > 100


@pytest.mark.parametrize("act", ["rrelu", "leaky"])
def test_test_phase_slope_is_exactly_two_elevenths(act, tmp_path):
    net = caffe.Net(tiny_train_val(DEFAULT, act, tmp_path), caffe.TEST)
    net.params["conv1"][0].data[...] = np.random.RandomState(4).randn(*net.params["conv1"][0].data.shape)
    net.forward()
    assert_leaky_slope_exact(net.blobs["conv1"].data, net.blobs["act1"].data)


@pytest.mark.parametrize("act", ["rrelu", "leaky"])
def test_deploy_slope_is_exactly_two_elevenths(act):
    net = caffe.Net(str(ROOT / f"models/srcnn_{act}_deploy.prototxt"), caffe.TEST)
    net.params["conv1"][0].data[...] = np.random.RandomState(5).randn(*net.params["conv1"][0].data.shape)
    net.blobs["data"].data[...] = np.random.RandomState(6).rand(*net.blobs["data"].data.shape)
    net.forward()
    assert_leaky_slope_exact(net.blobs["conv1"].data, net.blobs["act1"].data)


def test_prelu_starts_at_two_elevenths_per_channel():
    net = caffe.Net(str(ROOT / "models/srcnn_prelu_deploy.prototxt"), caffe.TEST)
    slopes = net.params["act1"][0].data
    assert slopes.shape == (DEFAULT.n1,)
    np.testing.assert_array_equal(slopes, SLOPE)


@pytest.mark.parametrize("solver", SOLVERS)
def test_solver_files_hold_the_config(solver):
    for dataset in DATASETS:
        cfg = dataset_config(dataset, solver=solver)  # DEFAULT with the data set's and solver's settings
        text = (ROOT / f"solvers/{dataset}/srcnn_rrelu_{solver}.prototxt").read_text()
        s = text_format.Parse(text, caffe_pb2.SolverParameter())
        assert s.type == SOLVERS[solver]
        assert s.net == f"models/{dataset}/srcnn_rrelu_train_val.prototxt"
        assert s.lr_policy == cfg.lr_policy and s.random_seed == cfg.random_seed
        for key in ("base_lr", "momentum", "weight_decay"):  # momentum: 0 where the type has none
            assert getattr(s, key) == np.float32(getattr(cfg, key)), key
        assert (s.max_iter, s.snapshot, s.test_interval) == (cfg.max_iter, cfg.snapshot,
                                                            cfg.test_interval)
        assert s.solver_mode == caffe_pb2.SolverParameter.CPU


def test_net_lr_mults_hold_the_config():
    net = text_format.Parse((ROOT / "models/brain/srcnn_relu_train_val.prototxt").read_text(),
                            caffe_pb2.NetParameter())
    convs = [l for l in net.layer if l.type == "Convolution"]
    got = [(c.param[0].lr_mult, c.param[1].lr_mult) for c in convs]
    want = list(zip(DEFAULT.lr_mult_weights, DEFAULT.lr_mult_biases))
    np.testing.assert_array_equal(np.float32(got), np.float32(want))
    assert all(c.convolution_param.weight_filler.std == np.float32(DEFAULT.init_std) for c in convs)


def test_one_nesterov_step_matches_caffe_closed_form(tmp_path):
    cfg = DEFAULT.with_overrides(["base_lr=0.5"])  # a visible step: W changes well above float eps
    solver = tiny_solver(cfg, "relu", "nesterov", tmp_path)
    net = solver.net
    for blobs in net.params.values():
        for b in blobs:
            b.diff[...] = 0
    net.forward()
    net.backward()
    mults = [m for pair in zip(cfg.lr_mult_weights, cfg.lr_mult_biases) for m in pair]
    before = [(b.data.copy(), b.diff.copy()) for p in net.params.values() for b in p]
    solver.step(1)
    after = [b.data for p in net.params.values() for b in p]
    mu = np.float32(cfg.momentum)
    for (w0, g), w1, mult in zip(before, after, mults):
        v = np.float32(cfg.base_lr * mult) * g  # v_0 = 0, so v_1 = lr * g
        np.testing.assert_allclose(w1, w0 - (1 + mu) * v, rtol=1e-5, atol=1e-9)
    assert not np.allclose(after[0], before[0][0])


def test_rrelu_channel_draws_share_one_slope_per_sample_and_channel(tmp_path):
    cfg = DEFAULT.with_overrides(["rrelu_draw=channel"])
    net = caffe.Net(tiny_train_val(cfg, "rrelu", tmp_path), caffe.TRAIN)
    net.params["conv1"][0].data[...] = np.random.RandomState(3).randn(*net.params["conv1"][0].data.shape)
    net.params["conv1"][1].data[...] = -0.5
    net.forward()
    x, y = net.blobs["conv1"].data, net.blobs["act1"].data
    assert net.blobs["act1_a"].data.shape == (cfg.batch_train, cfg.n1)
    ratios = np.where(x < -1e-3, y / np.where(x < -1e-3, x, 1), np.nan).reshape(cfg.batch_train, cfg.n1, -1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # channels with no negative input: NaN
        spread = np.nanmax(ratios, axis=2) - np.nanmin(ratios, axis=2)
        means = np.nanmean(ratios, axis=2)
    assert np.nanmax(spread) < 1e-5  # one slope per (sample, channel) ...
    has_negatives = ~np.isnan(spread)
    assert has_negatives.mean() > 0.5
    np.testing.assert_allclose(means[has_negatives],
                               1 / net.blobs["act1_a"].data[has_negatives], rtol=1e-5)
    assert len(np.unique(np.round(1 / net.blobs["act1_a"].data, 6))) > 1000  # ... drawn independently


@pytest.mark.parametrize("act", ["relu", "rrelu"])
def test_bias_free_net_keeps_black_black_and_scales_with_the_input(tmp_path, act):
    """conv_bias=false: no bias blobs; f(0) = 0 exactly and f(2x) = 2 f(x) (positively
    homogeneous), whatever the weights; with biases f(0) is the biases' image."""
    from core.nets import deploy_net

    def forward(cfg, image, seed=3):
        path = tmp_path / f"deploy_{cfg.conv_bias}.prototxt"
        path.write_text(text_format.MessageToString(deploy_net(cfg, act)))
        net = caffe.Net(str(path), caffe.TEST)
        rng = np.random.RandomState(seed)
        for blobs in net.params.values():
            for blob in blobs:
                blob.data[...] = rng.normal(0, 0.3, blob.data.shape)
        net.blobs["data"].reshape(1, 1, *image.shape)
        net.blobs["data"].data[0, 0] = image
        net.forward()
        return {k: len(v) for k, v in net.params.items()}, net.blobs["conv3"].data[0, 0].copy()

    x = np.random.RandomState(0).uniform(0, 1, (30, 31)).astype(np.float32)
    free = DEFAULT.with_overrides(["conv_bias=false"])
    blobs, zero = forward(free, np.zeros_like(x))
    assert set(blobs.values()) == {1} and not zero.any()
    assert np.array_equal(forward(free, 2 * x)[1], 2 * forward(free, x)[1])
    assert forward(DEFAULT, np.zeros_like(x))[1].any()  # the default net has biases


def test_a_data_sets_settings_sit_between_the_default_and_the_users_overrides(monkeypatch):
    from core import config
    monkeypatch.setitem(config.DATASET_SETTINGS, "prostate", ("max_iter=123", "base_lr=0.5"))
    cfg = dataset_config("prostate", ["base_lr=0.25"])
    assert (cfg.max_iter, cfg.base_lr) == (123, 0.25)
    assert dataset_config("my_scans").max_iter == DEFAULT.max_iter  # a user's own data set
