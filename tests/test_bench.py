"""The training-step benchmark: FLOP count, Caffe's timing engine, the JSON it writes, the torch check.

Only test_tiny_run_writes_the_json needs PyTorch (skipped without it)."""
import argparse
import importlib.util
import json
import os
import statistics

import caffe
import numpy as np
import pytest

from tools import bench_engines, bench_summary, bench_train
from core.config import DEFAULT

pytestmark = pytest.mark.blas  # numbers summed by OpenBLAS (tools/blas_kernels.py)

KEYS = ("caffe_ms", "torch_ms", "ratio", "caffe_ms_all", "torch_ms_all", "gflop_per_iter", "caffe_gflops",
        "torch_gflops", "threads", "per_layer_ms", "act", "solver", "batch", "torch_version", "blas", "cpu",
        "date", "flop_rule")

# One training iteration of the paper's net at batch 128 (bench/train_step.json's gflop_per_iter).
PAPER_GFLOP = 2.9128704
SMALL = DEFAULT.with_overrides(["batch_train=16", "n1=8", "n2=4", "f1=7", "f2=3", "f3=5"])


def engine(cfg, act, solver, directory, warmup=0):
    directory.mkdir(parents=True, exist_ok=True)
    _, listing = bench_engines.write_patches(directory, cfg)
    return bench_engines.CaffeEngine(cfg, act, solver, directory, listing, warmup=warmup)


def conv_flops_of_the_net(net):
    """{conv: {"forward", "backward"}} FLOPs of one training pass of a Caffe net, counted from the
    net itself: 2 per multiply-add; forward = the top's elements times the weights per output
    channel; backward = the weight gradient (as many MACs) plus, where Caffe computes one, the
    input gradient (as many again). Which convolutions compute an input gradient is seen, not
    assumed: their bottoms' diffs are filled with NaN and backward must overwrite them."""
    convs = [(name, net.bottom_names[name][0], net.top_names[name][0])
             for name, layer in zip(net._layer_names, net.layers) if layer.type == "Convolution"]
    for _, bottom, _ in convs:
        net.blobs[bottom].diff[...] = np.nan
    net.forward()
    net.backward()
    out = {}
    for name, bottom, top in convs:
        weights = net.params[name][0].data
        macs = net.blobs[top].data.size * (weights.size // weights.shape[0])
        diff = net.blobs[bottom].diff
        assert np.isnan(diff).all() or np.isfinite(diff).all(), name  # all of the input or none
        input_gradient = bool(np.isfinite(diff).all())
        out[name] = {"forward": 2 * macs, "backward": 2 * macs * (1 + input_gradient)}
    return out


@pytest.mark.parametrize("cfg", [DEFAULT, SMALL], ids=["paper", "small"])
def test_flop_count_matches_the_nets_own_shapes(cfg, tmp_path):
    counted = conv_flops_of_the_net(engine(cfg, "relu", "sgd", tmp_path).net)
    flops = bench_summary.train_flops(cfg)
    assert list(counted) == ["conv1", "conv2", "conv3"]
    for name, want in counted.items():
        assert flops[name] == want, name
    assert counted["conv1"]["backward"] == counted["conv1"]["forward"]  # the data needs no gradient
    assert flops["forward"] == sum(c["forward"] for c in counted.values())
    assert flops["backward"] == sum(c["backward"] for c in counted.values())
    assert flops["total"] == flops["forward"] + flops["backward"]
    if cfg is DEFAULT:
        assert flops["total"] / 1e9 == pytest.approx(PAPER_GFLOP)
    assert bench_summary.train_flops(cfg, batch=1)["total"] * cfg.batch_train == flops["total"]


@pytest.mark.parametrize("act,solver", [("relu", "sgd"), ("rrelu", "nesterov")])
def test_caffe_engine_times_steps_and_every_layer(act, solver, tmp_path):
    timed = engine(DEFAULT, act, solver, tmp_path / "timed")
    assert type(timed.solver).__name__ == {"sgd": "SGDSolver", "nesterov": "NesterovSolver"}[solver]
    caffe.set_random_seed(11)
    times = timed.block(1)
    assert len(times) == 1 and times[0] > 0 and timed.solver.iter == 1
    # The layer-by-layer timing is one whole training iteration: after it the weights are those
    # of one more solver.step on an engine in the same state (same init, data and slope draws).
    stepped = engine(DEFAULT, act, solver, tmp_path / "stepped")
    for seed in (11, 12):
        caffe.set_random_seed(seed)
        stepped.solver.step(1)
    timed_before = [b.data.copy() for p in timed.net.params.values() for b in p]
    caffe.set_random_seed(12)
    layers = timed.layers(1)
    after = [b.data.copy() for p in timed.net.params.values() for b in p]
    want = [b.data for p in stepped.net.params.values() for b in p]
    assert all(not np.array_equal(a, b) for a, b in zip(after, timed_before))
    for got, expected in zip(after, want):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)
    per_layer = layers["per_layer_ms"]
    assert list(per_layer)[:2] == ["data", "conv1"] and "conv3" in per_layer and "loss" in per_layer
    assert list(per_layer) == list(timed.net._layer_names)
    assert all(per_layer[c]["type"] == "Convolution" and per_layer[c]["forward"] > 0 and per_layer[c]["backward"] > 0
               for c in ("conv1", "conv2", "conv3"))
    if act == "rrelu":
        assert "act1_a" in per_layer  # the random slopes, drawn every forward pass
    assert all(v > 0 for v in layers["parts_ms"].values())
    info = timed.info()
    assert "OPENBLAS_NUM_THREADS" in info and isinstance(info["libraries"], list)
    peak = timed.peak(size=64, repeats=2)
    assert peak["gflops"] > 0 and peak["size"] == 64


def test_summary_has_the_keys_and_the_ratio_of_the_medians():
    args = argparse.Namespace(act="relu", solver="sgd", threads=2, iters=3, repeats=2, warmup=1)
    layers = {"per_layer_ms": {"conv1": {"type": "Convolution", "forward": 10.0, "backward": 12.0}},
              "parts_ms": {"clear_param_diffs": 0.1, "forward": 10.0, "backward": 12.0, "apply_update": 0.2,
                           "sum": 22.3}}
    result = bench_summary.summarize(args, DEFAULT, [[300.0, 100.0, 200.0], [250.0, 260.0, 270.0]],
                                   [[100.0, 90.0, 110.0], [95.0, 105.0, 100.0]], layers,
                                   {"OPENBLAS_NUM_THREADS": "2"}, {"set_num_threads": 2}, (0, 0, 0), (0, 0, 0),
                                   {"gflops": 100.0, "size": 2048, "repeats": 5})
    assert set(KEYS) <= set(result)
    # Medians over all six steps of each engine (255 = (250 + 260) / 2), and per repeat.
    assert result["caffe_ms"] == 255.0 and result["torch_ms"] == 100.0
    assert (result["caffe_ms_min"], result["torch_ms_min"]) == (100.0, 90.0)
    assert (result["caffe_ms_mean"], result["torch_ms_mean"]) == (230.0, 100.0)  # a run's ms/iteration
    assert result["ratio"] == pytest.approx(2.55)
    assert result["ratio_per_repeat"] == pytest.approx([2.0, 2.6])
    assert result["gflop_per_iter"] == pytest.approx(PAPER_GFLOP)
    assert result["caffe_gflops"] == pytest.approx(PAPER_GFLOP / 0.255)
    assert result["torch_gflops"] == pytest.approx(PAPER_GFLOP / 0.100)
    assert result["peak"]["caffe_fraction"] == pytest.approx(PAPER_GFLOP / 0.255 / 100.0)
    assert result["peak"]["torch_fraction"] == pytest.approx(PAPER_GFLOP / 0.100 / 100.0)
    assert result["per_layer_ms"]["conv1"]["forward_gflops"] == pytest.approx(0.82944 / 0.010)
    table = bench_summary.summary_table(result)
    assert "machine peak" in table and "conv1 bwd 12.0 ms" in table and "ratio caffe/torch (medians): 2.55" in table


def test_missing_torch_is_one_clear_line(monkeypatch, capsys, tmp_path):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find_spec(name, *a))
    assert bench_train.main(["--iters", "1", "--repeats", "1", "--out", str(tmp_path / "x.json")]) == 1
    assert capsys.readouterr().err.strip() == bench_train.TORCH_MISSING
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow  # two worker processes, a full-size net each
def test_tiny_run_writes_the_json(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "train_step.json"
    assert bench_train.main(["--iters", "2", "--repeats", "1", "--warmup", "1", "--threads", "1",
                             "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result) >= {"relu_sgd", "rrelu_nesterov", "comparison"}
    assert result["comparison"]["rrelu_nesterov"]["step_ratio"] == pytest.approx(
        result["rrelu_nesterov"]["caffe_ms"] / result["relu_sgd"]["caffe_ms"])
    result = result["relu_sgd"]
    assert set(KEYS) <= set(result)
    medians = statistics.median(result["caffe_ms_all"]), statistics.median(result["torch_ms_all"])
    assert (result["caffe_ms"], result["torch_ms"]) == medians
    assert result["ratio"] == pytest.approx(medians[0] / medians[1])
    assert len(result["caffe_ms_all"]) == len(result["torch_ms_all"]) == 2
    assert result["batch"] == 128 and result["act"] == "relu" and result["solver"] == "sgd"
    assert result["threads"]["caffe"]["OPENBLAS_NUM_THREADS"] == "1"
    assert result["threads"]["torch"]["set_num_threads"] == 1
    assert {"conv1", "conv2", "conv3"} <= set(result["per_layer_ms"])
    assert result["gflop_per_iter"] == pytest.approx(PAPER_GFLOP)
    assert result["peak"]["gflops"] > 0
    assert "ratio caffe/torch" in capsys.readouterr().out


def test_configurations_are_compared_with_relu_sgd_per_repeat():
    result = {"relu_sgd": {"caffe_ms": 20.0, "peak": {"caffe_fraction": 0.5}},
              "rrelu_nesterov": {"caffe_ms": 30.0}}
    blocks = {"relu_sgd": [[20.0, 20.0], [10.0, 30.0]], "rrelu_nesterov": [[24.0, 26.0], [30.0, 30.0]]}
    c = bench_summary.compare(result, blocks)
    assert c["rrelu_nesterov"]["step_ratio"] == pytest.approx(1.5)
    assert c["rrelu_nesterov"]["step_ratio_per_repeat"] == pytest.approx([1.25, 1.5])
    assert c["rrelu_nesterov"]["step_ratio_range"] == pytest.approx([1.25, 1.5])
    assert c["baseline_fraction_of_peak"] == 0.5 and "relu_sgd" not in c
    assert c["fraction_of_peak"] == {"relu_sgd": 0.5} and "paired" not in c["rrelu_nesterov"]
    assert bench_summary.compare({"rrelu_nesterov": {}}, {"rrelu_nesterov": []}) == {}


def test_activations_inside_convolutions_are_also_compared_like_for_like():
    result = {"relu_sgd": {"caffe_ms": 20.0, "peak": {"caffe_fraction": 0.5}},
              "relu_sgd_conv": {"caffe_ms": 16.0, "peak": {"caffe_fraction": 0.6}},
              "rrelu_nesterov_conv": {"caffe_ms": 24.0}}
    blocks = {"relu_sgd": [[20.0]], "relu_sgd_conv": [[16.0]], "rrelu_nesterov_conv": [[24.0]]}
    c = bench_summary.compare(result, blocks)
    assert c["rrelu_nesterov_conv"]["step_ratio"] == pytest.approx(1.2)
    assert c["rrelu_nesterov_conv"]["paired"]["baseline"] == "relu_sgd_conv"
    assert c["rrelu_nesterov_conv"]["paired"]["step_ratio"] == pytest.approx(1.5)
    assert c["fraction_of_peak"] == {"relu_sgd": 0.5, "relu_sgd_conv": 0.6}
    line = bench_summary.ratio_line("rrelu_nesterov_conv", "relu_sgd_conv", c["rrelu_nesterov_conv"]["paired"])
    assert line == "rrelu_nesterov_conv / relu_sgd_conv step: 1.50 (per repeat 1.50-1.50; target <= 1.2)"


def test_torch_workers_are_shared_by_configurations_of_one_activation_and_solver():
    names = list(bench_train.CONFIGS)
    pair = {name: bench_train.CONFIGS[name][:2] for name in names}
    partner = bench_train.torch_partners(names)
    assert set(partner) == set(names) and all(pair[partner[n]] == pair[n] for n in names)
    assert len(set(partner.values())) == len(set(pair.values()))  # one torch worker per pair
    # The first configuration asked for of each pair holds the worker, whichever it is.
    some = ["rrelu_nesterov_fused", "relu_sgd_conv", "rrelu_nesterov_conv"]
    assert bench_train.torch_partners(some) == {"rrelu_nesterov_fused": "rrelu_nesterov_fused",
                                                "relu_sgd_conv": "relu_sgd_conv",
                                                "rrelu_nesterov_conv": "rrelu_nesterov_fused"}


def test_an_unknown_configuration_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        bench_train.parse_args(["--configs", "relu_sgd,tanh_adam"])
    assert "tanh_adam" in capsys.readouterr().err
    assert bench_train.parse_args(["--configs", "relu_sgd"]).configs == ["relu_sgd"]


def fake_gpu(monkeypatch, tmp_path):
    """An nvidia-smi on PATH that lists one GPU (which this machine's Caffe cannot use)."""
    script = tmp_path / "nvidia-smi"
    script.write_text("#!/bin/sh\necho 'GPU 0: Fake GPU (UUID: GPU-1)'\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")


def test_the_gpu_column_is_left_out_without_a_usable_gpu(monkeypatch, tmp_path, capsys):
    args = bench_train.parse_args([])
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere") + ":/usr/bin:/bin")
    assert bench_train.bench_gpu(args) is None  # no nvidia-smi: nothing said
    fake_gpu(monkeypatch, tmp_path)
    if bench_train.bench_gpu(args) is None:  # a build or machine that cannot use it: one line
        assert capsys.readouterr().err.startswith("bench: no GPU column:")
        with pytest.raises(bench_train.BenchError):
            bench_train.bench_gpu(bench_train.parse_args(["--gpu", "0"]))
    assert bench_train.bench_gpu(bench_train.parse_args(["--gpu", "-1"])) is None


def test_the_gpu_column_compares_with_the_cpu_step_and_torch():
    blocks = {("caffe", "relu_sgd"): [[2.0, 4.0], [3.0, 3.0]], ("torch", "relu_sgd"): [[1.5, 1.5]],
              "device": 0}
    g = bench_train.gpu_column({"caffe_ms": 30.0}, blocks, "relu_sgd", "relu_sgd")
    assert g["caffe_ms"] == 3.0 and g["caffe_speedup_over_cpu"] == 10.0 and g["ratio"] == 2.0
    assert "torch_ms" not in bench_train.gpu_column({"caffe_ms": 30.0}, blocks, "relu_sgd", "rrelu_nesterov")
