"""Our performance patches to Caffe keep Caffe's results (tools/setup/patches/).

Over 300 lines: the tests follow the patches in their order, on the switches and small nets
defined at the top; it reads better whole.

The direct convolution (0002) and the images-in-parallel convolution (0006) are compared with
Caffe's own im2col + GEMM path in the same process: MEDSR_DIRECT_CONV=0 and MEDSR_PARALLEL_CONV=0
switch them off at run time, and the patches' path counters (0012) show which path each run took
(the outputs cannot: some OpenBLAS kernels sum in the direct path's order). The ReLU backward
rewrite (0003) must be bit-identical to upstream's formula.
"""
import ctypes
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager

import caffe
import numpy as np
import pytest
from caffe import layers as L

from core.config import ROOT
from tests.helpers import tiny_training

pytestmark = pytest.mark.blas  # numbers summed by OpenBLAS (tools/blas_kernels.py)


def libcaffe():
    """The libcaffe that pycaffe loaded."""
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "libcaffe.so" in line}
    assert len(paths) == 1, paths
    return ctypes.CDLL(paths.pop())


def switch_enabled(symbol):
    """Calls one of the patches' ``bool caffe::..._enabled()`` functions by its mangled name."""
    fn = getattr(libcaffe(), symbol)
    fn.restype = ctypes.c_bool
    return fn()


@contextmanager
def env_switch(name, on):
    old = os.environ.get(name)
    os.environ[name] = "1" if on else "0"
    try:
        yield
    finally:
        os.environ.pop(name) if old is None else os.environ.update({name: old})


def direct_conv(on):
    return env_switch("MEDSR_DIRECT_CONV", on)


def parallel_conv(on):
    return env_switch("MEDSR_PARALLEL_CONV", on)


@pytest.mark.parametrize("switch,symbol", [
    (direct_conv, "_ZN5caffe19direct_conv_enabledEv"),  # caffe::direct_conv_enabled()
    (parallel_conv, "_ZN5caffe21parallel_conv_enabledEv"),  # caffe::parallel_conv_enabled()
])
def test_patched_paths_are_built_and_switchable(switch, symbol):
    with switch(True):
        assert switch_enabled(symbol)
    with switch(False):
        assert not switch_enabled(symbol)


DIRECT_PATH, PARALLEL_PATH = 0, 1  # caffe::PatchedPath (patch 0012)


def path_count(path):
    """Passes that took one of the patched paths since libcaffe was loaded (patch 0012)."""
    fn = libcaffe().medsr_patched_path_count
    fn.restype = ctypes.c_long
    return fn(path)


@contextmanager
def serial_blas():
    """OpenBLAS runs each call on the calling thread while inside: Caffe's GEMM path then runs the
    very GEMMs the parallel path runs per image (which makes its own calls serial), on any kernel."""
    lib = ctypes.CDLL("libopenblas.so.0")  # the copy libcaffe loaded
    threads = lib.openblas_get_num_threads()
    lib.openblas_set_num_threads(1)
    try:
        yield
    finally:
        lib.openblas_set_num_threads(threads)


def load_net(proto, phase):
    """A caffe.Net of a NetSpec proto (through a temporary prototxt file)."""
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
        f.write(str(proto))
    try:
        return caffe.Net(f.name, phase)
    finally:
        os.unlink(f.name)


def two_input_eltwise(shape, operation, propagate_down=(True, True)):
    """A TRAIN net computing Eltwise ``operation`` of inputs a and b, with backward forced to the
    inputs that ``propagate_down`` names."""
    n = caffe.NetSpec()
    n.a = L.Input(shape=dict(dim=shape))
    n.b = L.Input(shape=dict(dim=shape))
    n.out = L.Eltwise(n.a, n.b, operation=operation, propagate_down=list(propagate_down))
    proto = n.to_proto()
    proto.force_backward = True
    return load_net(proto, caffe.TRAIN)


def conv_net(shape, outputs, kernel, bias, stride=1, pad=0):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=list(shape)))
    n.conv = L.Convolution(n.data, num_output=outputs, kernel_h=kernel[0], kernel_w=kernel[1],
                           stride=stride, pad=pad, bias_term=bias,
                           weight_filler=dict(type="gaussian", std=1))
    proto = n.to_proto()
    proto.force_backward = True
    return load_net(proto, caffe.TRAIN)


def forward_backward(net, data, weights, top_diff):
    """Output, weight/bias gradients and input gradient of one pass (param diffs start at 0)."""
    for blob, value in zip(net.params["conv"], weights):
        blob.data[...] = value
        blob.diff[...] = 0
    net.blobs["data"].data[...] = data
    net.forward()
    net.blobs["conv"].diff[...] = top_diff
    net.backward()
    return ([net.blobs["conv"].data.copy(), net.blobs["data"].diff.copy()] +
            [b.diff.copy() for b in net.params["conv"]])


def assert_close(got, want, rtol=1e-5):
    scale = max(np.abs(want).max(), 1e-30)
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale)


CASES = [  # (N, C, H, W), outputs, kernel, bias
    ((4, 32, 25, 25), 1, (5, 5), True),  # SRCNN conv3
    ((3, 3, 17, 11), 2, (3, 5), True),
    ((5, 8, 9, 9), 4, (1, 1), False),
    ((2, 1, 13, 20), 3, (9, 9), True),
    ((1, 6, 7, 5), 1, (7, 5), True),  # kernel as large as the input: 1x1 output
]


def off_and_on(switch, path, shape, outputs, kernel, bias, stride=1, pad=0):
    """One random convolution pass with ``switch`` off (Caffe's GEMM path), then on: the
    (output, input gradient, weight gradient[, bias gradient]) of each, after checking that
    they agree to 1e-5 and that the patched ``path`` ran with the switch on only."""
    rng = np.random.RandomState(sum(shape) + outputs)
    net = conv_net(shape, outputs, kernel, bias, stride, pad)
    weights = [rng.randn(*b.data.shape).astype(np.float32) for b in net.params["conv"]]
    data = rng.randn(*shape).astype(np.float32)
    top_diff = rng.randn(*net.blobs["conv"].data.shape).astype(np.float32)
    before = path_count(path)
    with switch(False), serial_blas():
        want = forward_backward(net, data, weights, top_diff)
    assert path_count(path) == before, "the switch did not turn the patched path off"
    with switch(True):
        got = forward_backward(net, data, weights, top_diff)
    assert path_count(path) == before + 2, "the patched path did not run forward and backward"
    for g, w in zip(got, want):
        assert_close(g, w)
    return got, want


@pytest.mark.parametrize("shape,outputs,kernel,bias", CASES)
def test_direct_convolution_matches_caffe_gemm_path(shape, outputs, kernel, bias):
    off_and_on(direct_conv, DIRECT_PATH, shape, outputs, kernel, bias)


PARALLEL_CASES = [  # (N, C, H, W), outputs, kernel, bias, stride, pad
    ((20, 1, 33, 33), 64, (9, 9), True, 1, 0),  # SRCNN conv1 (no input gradient in training)
    ((13, 64, 25, 25), 32, (1, 1), True, 1, 0),  # SRCNN conv2: no im2col
    ((9, 3, 12, 10), 6, (3, 3), False, 2, 1),  # stride and padding: Caffe's general im2col
    ((2, 5, 8, 8), 7, (2, 3), True, 1, 0),  # fewer images than chunks
]


@pytest.mark.parametrize("shape,outputs,kernel,bias,stride,pad", PARALLEL_CASES)
def test_parallel_convolution_matches_caffe_gemm_path(shape, outputs, kernel, bias, stride, pad):
    got, want = off_and_on(parallel_conv, PARALLEL_PATH, shape, outputs, kernel, bias, stride, pad)
    # Per image the same single-threaded GEMMs run (Caffe's path under serial_blas), and b + W * col
    # is added in one step either way: the output and input gradient are exact on any kernel.
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("switch", [direct_conv, parallel_conv])
def test_srcnn_solver_steps_match_with_and_without_a_patched_path(tmp_path, switch):
    results = []
    for on in (False, True):
        with switch(on):
            results.append(tiny_training(tmp_path / str(on)))
    for got, want in zip(results[1], results[0]):
        assert_close(got, want, rtol=1e-4)  # three updates compound the 1e-6 differences


def relu_backward(x, top_diff, slope):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=list(x.shape)))
    n.relu = L.ReLU(n.data, negative_slope=slope)
    proto = n.to_proto()
    proto.force_backward = True
    net = load_net(proto, caffe.TRAIN)
    net.blobs["data"].data[...] = x
    net.forward()
    net.blobs["relu"].diff[...] = top_diff
    net.backward()
    return net.blobs["data"].diff.copy()


@pytest.mark.parametrize("slope", [0.0, np.float32(2 / 11)])
def test_relu_backward_is_bit_identical_to_upstream(slope):
    rng = np.random.RandomState(0)
    x = rng.randn(4, 8, 32, 40).astype(np.float32)  # >= 2^15 elements: the OpenMP loop (0007)
    x.flat[:4] = [0.0, -0.0, np.nan, np.inf]
    top = rng.randn(*x.shape).astype(np.float32)
    slope = np.float32(slope)
    with np.errstate(invalid="ignore"):
        upstream = top * ((x > 0).astype(np.float32) + slope * (x <= 0).astype(np.float32))
    np.testing.assert_array_equal(relu_backward(x, top, slope), upstream)


def test_power_minus_one_is_the_correctly_rounded_reciprocal():
    """0004: Power(x, -1) divides instead of calling pow(); upstream computed pow in double and
    rounded to float, which is the correctly rounded 1/x: compare with that to 1 ulp."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[4, 8, 32, 40]))  # >= 2^15 elements: the OpenMP loop (0007)
    n.inv = L.Power(n.data, power=-1)
    net = load_net(n.to_proto(), caffe.TEST)
    x = np.random.RandomState(1).uniform(3, 8, net.blobs["data"].data.shape).astype(np.float32)
    x.flat[:3] = [-2.5, 1e-20, 7.0]
    net.blobs["data"].data[...] = x
    net.forward()
    want = np.power(x.astype(np.float64), -1).astype(np.float32)
    np.testing.assert_array_max_ulp(net.blobs["inv"].data, want, maxulp=1)


@pytest.mark.parametrize("propagate_down", [(True, True), (True, False), (False, True)])
def test_eltwise_max_is_bit_identical_to_upstream(propagate_down):
    """0005: Eltwise MAX of two inputs as selects; upstream's if/else picks the second input on
    ties (and NaN) and routes the gradient as 0 + top_diff: to both inputs in one pass (0009),
    or to one."""
    shape = [4, 8, 32, 40]  # >= 2^15 elements: the OpenMP loop (0007)
    net = two_input_eltwise(shape, caffe.params.Eltwise.MAX, propagate_down)
    rng = np.random.RandomState(2)
    a, b = rng.randn(*shape).astype(np.float32), rng.randn(*shape).astype(np.float32)
    a.flat[:4], b.flat[:4] = [1.5, np.nan, 0.0, 2.0], [1.5, 0.3, -0.0, np.nan]  # ties, NaN, zeros
    top = rng.randn(*shape).astype(np.float32)
    top.flat[4:6] = [-0.0, -0.0]
    net.blobs["a"].data[...], net.blobs["b"].data[...] = a, b
    net.forward()
    net.blobs["out"].diff[...] = top
    net.backward()
    with np.errstate(invalid="ignore"):
        a_wins = a > b
    np.testing.assert_array_equal(net.blobs["out"].data, np.where(a_wins, a, b))
    zero = np.float32(0)
    for blob, wins, routed in (("a", a_wins, propagate_down[0]), ("b", ~a_wins, propagate_down[1])):
        if not routed:
            continue
        got, want = net.blobs[blob].diff, np.where(wins, zero + top, zero)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def relu_forward_is_upstreams(x, slope, got):
    want = np.maximum(x, 0) + slope * np.minimum(x, 0)
    np.testing.assert_array_equal(got, want)


def test_relu_forward_is_bit_identical_to_upstream():
    """0007 runs ReLU's forward loop on all threads: still max(x, 0) + slope * min(x, 0)."""
    x = np.random.RandomState(3).randn(4, 8, 32, 40).astype(np.float32)
    for slope in (np.float32(0), np.float32(2 / 11)):
        n = caffe.NetSpec()
        n.data = L.Input(shape=dict(dim=list(x.shape)))
        n.relu = L.ReLU(n.data, negative_slope=float(slope))
        net = load_net(n.to_proto(), caffe.TEST)
        net.blobs["data"].data[...] = x
        net.forward()
        relu_forward_is_upstreams(x, slope, net.blobs["relu"].data)


def test_eltwise_prod_backward_is_bit_identical_to_upstream():
    """0007: with two bottoms, each bottom's gradient is the other bottom times top_diff, one
    product per element as upstream's copy-then-multiply computed it."""
    shape = [4, 8, 32, 40]
    net = two_input_eltwise(shape, caffe.params.Eltwise.PROD)
    rng = np.random.RandomState(4)
    a, b, top = (rng.randn(*shape).astype(np.float32) for _ in range(3))
    net.blobs["a"].data[...], net.blobs["b"].data[...] = a, b
    net.forward()
    np.testing.assert_array_equal(net.blobs["out"].data, a * b)
    net.blobs["out"].diff[...] = top
    net.backward()
    np.testing.assert_array_equal(net.blobs["a"].diff, b * top)
    np.testing.assert_array_equal(net.blobs["b"].diff, a * top)


def fast_rng(on):
    return env_switch("MEDSR_FAST_RNG", on)


def uniform_draws(count, low, high, seed, passes=3):
    """``passes`` forward passes of a DummyData uniform filler after caffe.set_random_seed."""
    n = caffe.NetSpec()
    n.u = L.DummyData(shape=dict(dim=[count]), data_filler=dict(type="uniform", min=low, max=high))
    net = load_net(n.to_proto(), caffe.TRAIN)
    caffe.set_random_seed(seed)
    draws = []
    for _ in range(passes):
        net.forward()
        draws.append(net.blobs["u"].data.copy())
    return draws


def test_fast_rng_is_built_and_switchable():
    with fast_rng(True):
        assert switch_enabled("_ZN5caffe16fast_rng_enabledEv")  # caffe::fast_rng_enabled()
    with fast_rng(False):
        assert not switch_enabled("_ZN5caffe16fast_rng_enabledEv")


@pytest.mark.parametrize("count,low,high", [
    (3 * 4992 + 17, 3.0, 8.0),  # RReLU's slopes, over several of the patch's blocks
    (1, 0.0, 1.0),
    (20001, 5.0, 5.0),  # an empty range: boost rejects about half the draws and redraws
    (5000, -1e30, 1e30),
])
def test_fast_uniform_draws_are_boosts(count, low, high):
    """0008 draws the same floats as boost::variate_generator, and leaves the generator where
    boost would (the later passes match too)."""
    with fast_rng(False):
        want = uniform_draws(count, low, high, seed=count)
    with fast_rng(True):
        got = uniform_draws(count, low, high, seed=count)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert not np.array_equal(got[0], got[1]) or count == 1 or low == high


def test_unpadded_im2col_convolution_matches_numpy():
    """0009 copies im2col's rows for stride 1 without padding; the GEMM path (both patched paths
    off) must still compute the textbook convolution and its weight gradient."""
    rng = np.random.RandomState(6)
    shape, outputs, kernel = (3, 4, 11, 9), 6, (3, 4)
    net = conv_net(shape, outputs, kernel, bias=True)
    weights = [rng.randn(*b.data.shape).astype(np.float32) for b in net.params["conv"]]
    data = rng.randn(*shape).astype(np.float32)
    top_diff = rng.randn(*net.blobs["conv"].data.shape).astype(np.float32)
    with direct_conv(False), parallel_conv(False):
        out, _, weight_diff, _ = forward_backward(net, data, weights, top_diff)
    w, b = (x.astype(np.float64) for x in weights)
    out_h, out_w = shape[2] - kernel[0] + 1, shape[3] - kernel[1] + 1
    want_out = np.empty((shape[0], outputs, out_h, out_w))
    want_dw = np.zeros(w.shape)
    for y in range(out_h):
        for x in range(out_w):
            window = data[:, :, y:y + kernel[0], x:x + kernel[1]].astype(np.float64)
            want_out[:, :, y, x] = np.einsum("nchw,ochw->no", window, w) + b
            want_dw += np.einsum("no,nchw->ochw", top_diff[:, :, y, x].astype(np.float64), window)
    assert_close(out, want_out)
    assert_close(weight_diff, want_dw)


@pytest.mark.slow
def test_training_does_not_depend_on_the_thread_count(tmp_path):
    """0002 and 0006 sum gradients per fixed chunk of images and 0007's loops work element by
    element, so a run gives the same bits on 1, 2 or 3 threads (OpenMP and OpenBLAS alike)."""
    script = ("import sys, numpy as np; from pathlib import Path; "
              "from tests.helpers import tiny_training; "
              "np.savez(sys.argv[1], *tiny_training(Path(sys.argv[2])))")
    results = []
    for threads in ("1", "2", "3"):
        out = tmp_path / f"params_{threads}.npz"
        env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads,
                   GLOG_minloglevel="2")
        subprocess.run([sys.executable, "-c", script, str(out), str(tmp_path / threads)],
                       cwd=ROOT, env=env, check=True)
        with np.load(out) as params:
            results.append([params[k] for k in sorted(params.files, key=lambda k: int(k.split("_")[1]))])
    for other in results[1:]:
        for got, want in zip(other, results[0]):
            np.testing.assert_array_equal(got, want)
