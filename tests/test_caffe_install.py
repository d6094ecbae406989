"""The Caffe that `make setup` provides: pycaffe imports, NetSpec nets load, solvers update as Caffe's
documented rules say."""
import os
import subprocess

import caffe
import h5py
import numpy as np
from caffe import layers as L
from caffe.proto import caffe_pb2

from core.config import ACTIVATIONS, DEFAULT, ROOT
from core.nets import deploy_net, train_val_net


def srcnn_on_dummy_data(batch=2, size=33):
    """SRCNN 9-1-5 (64, 32, 1 filters) on DummyData, built with NetSpec."""
    n = caffe.NetSpec()
    n.data = L.DummyData(shape=dict(dim=[batch, 1, size, size]), data_filler=dict(type="gaussian"))
    n.conv1 = L.Convolution(n.data, num_output=64, kernel_size=9, weight_filler=dict(type="gaussian", std=0.001))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.conv2 = L.Convolution(n.relu1, num_output=32, kernel_size=1, weight_filler=dict(type="gaussian", std=0.001))
    n.relu2 = L.ReLU(n.conv2, in_place=True)
    n.conv3 = L.Convolution(n.relu2, num_output=1, kernel_size=5, weight_filler=dict(type="gaussian", std=0.001))
    return n.to_proto()


def test_pycaffe_imports_with_hdf5_and_python_layer():
    assert hasattr(caffe, "Net") and hasattr(caffe, "NesterovSolver")
    # caffe.layers makes up any attribute name (L.Anything is a layer factory), so ask Caffe's
    # layer registry instead: HDF5Data needs the HDF5 build, Python WITH_PYTHON_LAYER.
    registered = set(caffe.layer_type_list())
    assert {"HDF5Data", "Python"} <= registered
    assert "NoSuchLayer" not in registered


def test_every_layer_type_of_the_generated_nets_is_registered():
    cfg = DEFAULT.with_overrides(["rrelu_draw=channel"])  # its RReLU uses Scale, not Eltwise PROD
    used = set()
    for act in ACTIVATIONS:
        for config in (DEFAULT, cfg):
            used |= {layer.type for layer in train_val_net(config, act, "any").layer}
            used |= {layer.type for layer in deploy_net(config, act).layer}
    assert {"HDF5Data", "Convolution", "EuclideanLoss", "Input"} <= used
    assert used <= set(caffe.layer_type_list()), used - set(caffe.layer_type_list())


def test_srcnn_netspec_maps_33_to_21(tmp_path):
    path = tmp_path / "srcnn.prototxt"
    path.write_text(str(srcnn_on_dummy_data()))
    net = caffe.Net(str(path), caffe.TEST)
    net.forward()
    assert net.blobs["conv3"].data.shape == (2, 1, 21, 21)
    assert [p[0].data.shape for p in net.params.values()] == [(64, 1, 9, 9), (32, 64, 1, 1), (1, 32, 5, 5)]


# lr_mult of conv weights, conv bias, out weights, out bias (net.params order).
LR_MULTS = [1.0, 0.1, 1.0, 1.0]


def tiny_regression_solver(tmp_path, solver_type, base_lr=0.01, momentum=0.9):
    """A 3x3 conv regression on a 4-sample HDF5 file; one batch is the whole file, so every
    iteration sees the same data and the gradient can be recomputed by hand."""
    rng = np.random.RandomState(0)
    h5 = tmp_path / "tiny.h5"
    with h5py.File(h5, "w") as f:
        f["data"] = rng.rand(4, 1, 5, 5).astype(np.float32)
        f["label"] = rng.rand(4, 1, 3, 3).astype(np.float32)
    (tmp_path / "list.txt").write_text(f"{h5}\n")

    n = caffe.NetSpec()
    n.data, n.label = L.HDF5Data(source=str(tmp_path / "list.txt"), batch_size=4, ntop=2)
    n.conv = L.Convolution(n.data, num_output=2, kernel_size=3,
                           weight_filler=dict(type="gaussian", std=0.5), bias_filler=dict(type="constant"),
                           param=[dict(lr_mult=m) for m in LR_MULTS[:2]])
    n.out = L.Convolution(n.conv, num_output=1, kernel_size=1, weight_filler=dict(type="gaussian", std=0.5))
    n.loss = L.EuclideanLoss(n.out, n.label)
    (tmp_path / "net.prototxt").write_text(str(n.to_proto()))

    s = caffe_pb2.SolverParameter()
    s.train_net = str(tmp_path / "net.prototxt")
    s.type = solver_type
    s.base_lr, s.momentum, s.weight_decay, s.lr_policy = base_lr, momentum, 0.0, "fixed"
    s.max_iter, s.display, s.random_seed = 100, 0, 1
    s.snapshot_prefix = str(tmp_path / "snap")
    (tmp_path / "solver.prototxt").write_text(str(s))
    return caffe.get_solver(str(tmp_path / "solver.prototxt"))


def weights_and_gradients(net):
    """Copies of every parameter and its gradient at the current weights (diffs cleared first,
    as Solver::Step does)."""
    for blobs in net.params.values():
        for b in blobs:
            b.diff[...] = 0
    net.forward()
    net.backward()
    return ([b.data.copy() for p in net.params.values() for b in p],
            [b.diff.copy() for p in net.params.values() for b in p])


def run_and_check(solver, update_rule, base_lr=0.01, mu=0.9):
    net = solver.net
    history = None
    for _ in range(3):
        before, grads = weights_and_gradients(net)
        history = history or [np.zeros_like(g) for g in grads]
        solver.step(1)
        after = [b.data for p in net.params.values() for b in p]
        for i, (w0, g, w1, m) in enumerate(zip(before, grads, after, LR_MULTS)):
            lr = np.float32(base_lr * m)
            expected, history[i] = update_rule(w0, g, history[i], lr, np.float32(mu))
            np.testing.assert_allclose(w1, expected, rtol=1e-5, atol=1e-7)
            assert not np.allclose(w1, w0)


def sgd_rule(w, g, v, lr, mu):
    v_new = mu * v + lr * g
    return w - v_new, v_new


def nesterov_rule(w, g, v, lr, mu):
    v_new = mu * v + lr * g
    return w - ((1 + mu) * v_new - mu * v), v_new


def test_sgd_steps_follow_caffe_momentum_rule(tmp_path):
    run_and_check(tiny_regression_solver(tmp_path, "SGD"), sgd_rule)


def test_nesterov_steps_follow_caffe_rule(tmp_path):
    run_and_check(tiny_regression_solver(tmp_path, "Nesterov"), nesterov_rule)


def test_the_venv_keeps_idle_threads_from_spinning():
    """`make setup` makes every Python of .venv, and .venv/bin/caffe, default libgomp's and
    OpenBLAS's idle threads to sleeping (tools/setup/setup.sh): spinning, they took the cores from
    the training step's OpenMP threads. A value of the user's own is kept."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}
    show = "import os; print(os.environ['OMP_WAIT_POLICY'], os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    python = str(ROOT / ".venv" / "bin" / "python")
    out = subprocess.run([python, "-c", show], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PASSIVE", "4"]
    out = subprocess.run([python, "-c", show], env=dict(env, OPENBLAS_THREAD_TIMEOUT="28"),
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PASSIVE", "28"]
    wrapper = (ROOT / ".venv" / "bin" / "caffe").read_text()
    assert ': "${OMP_WAIT_POLICY:=PASSIVE}"' in wrapper and ': "${OPENBLAS_THREAD_TIMEOUT:=4}"' in wrapper
