"""The training-step benchmark: FLOP count, Caffe's timing engine, the JSON it writes, the torch check.

Only test_tiny_run_writes_the_json needs PyTorch (skipped without it)."""
import argparse
import importlib.util
import json

import pytest

from tools import bench_train
from core.config import DEFAULT

KEYS = ("caffe_ms", "torch_ms", "ratio", "caffe_ms_all", "torch_ms_all", "gflop_per_iter", "caffe_gflops",
        "torch_gflops", "threads", "per_layer_ms", "act", "solver", "batch", "torch_version", "blas", "cpu",
        "date", "flop_rule")


def test_flop_count_matches_a_hand_count():
    # Batch 128; conv1 1->64 k9 on 33x33 -> 25x25; conv2 64->32 k1 -> 25x25; conv3 32->1 k5 -> 21x21.
    conv1 = 2 * 128 * 64 * 25 * 25 * 1 * 9 * 9  # 829,440,000
    conv2 = 2 * 128 * 32 * 25 * 25 * 64 * 1 * 1  # 327,680,000
    conv3 = 2 * 128 * 1 * 21 * 21 * 32 * 5 * 5  # 90,316,800
    assert (conv1, conv2, conv3) == (829_440_000, 327_680_000, 90_316_800)
    flops = bench_train.train_flops(DEFAULT)
    assert flops["conv1"] == {"forward": 829_440_000, "backward": 829_440_000}  # weight grad only
    assert flops["conv2"] == {"forward": 327_680_000, "backward": 655_360_000}  # weight + input grad
    assert flops["conv3"] == {"forward": 90_316_800, "backward": 180_633_600}
    assert flops["forward"] == 1_247_436_800
    assert flops["backward"] == 1_665_433_600
    assert flops["total"] == 2_912_870_400


@pytest.mark.parametrize("act,solver", [("relu", "sgd"), ("rrelu", "nesterov")])
def test_caffe_engine_times_steps_and_every_layer(act, solver, tmp_path):
    h5, listing = bench_train.write_patches(tmp_path, DEFAULT)
    engine = bench_train.CaffeEngine(DEFAULT, act, solver, tmp_path, listing, warmup=0)
    assert type(engine.solver).__name__ == {"sgd": "SGDSolver", "nesterov": "NesterovSolver"}[solver]
    times = engine.block(1)
    assert len(times) == 1 and times[0] > 0
    layers = engine.layers(1)
    per_layer = layers["per_layer_ms"]
    assert list(per_layer)[:2] == ["data", "conv1"] and "conv3" in per_layer and "loss" in per_layer
    assert all(per_layer[c]["type"] == "Convolution" and per_layer[c]["forward"] > 0 and per_layer[c]["backward"] > 0
               for c in ("conv1", "conv2", "conv3"))
    if act == "rrelu":
        assert "act1_a" in per_layer  # the random slopes, drawn every forward pass
    parts = layers["parts_ms"]
    assert parts["sum"] == pytest.approx(parts["clear_param_diffs"] + parts["forward"] + parts["backward"]
                                         + parts["apply_update"])
    info = engine.info()
    assert "OPENBLAS_NUM_THREADS" in info and isinstance(info["libraries"], list)
    peak = engine.peak(size=64, repeats=2)
    assert peak["gflops"] > 0 and peak["size"] == 64


def test_summary_has_the_keys_and_the_ratio_of_the_medians():
    args = argparse.Namespace(act="relu", solver="sgd", threads=2, iters=3, repeats=2, warmup=1)
    layers = {"per_layer_ms": {"conv1": {"type": "Convolution", "forward": 10.0, "backward": 12.0}},
              "parts_ms": {"clear_param_diffs": 0.1, "forward": 10.0, "backward": 12.0, "apply_update": 0.2,
                           "sum": 22.3}}
    result = bench_train.summarize(args, DEFAULT, [[300.0, 100.0, 200.0], [250.0, 260.0, 270.0]],
                                   [[100.0, 90.0, 110.0], [95.0, 105.0, 100.0]], layers,
                                   {"OPENBLAS_NUM_THREADS": "2"}, {"set_num_threads": 2}, (0, 0, 0), (0, 0, 0),
                                   {"gflops": 100.0, "size": 2048, "repeats": 5})
    assert set(KEYS) <= set(result)
    assert result["peak"]["caffe_fraction"] == pytest.approx(result["caffe_gflops"] / 100.0)
    assert result["peak"]["torch_fraction"] == pytest.approx(result["torch_gflops"] / 100.0)
    assert "machine peak" in bench_train.summary_table(result)
    assert result["caffe_ms"] == 255.0 and result["torch_ms"] == 100.0
    assert result["ratio"] == result["caffe_ms"] / result["torch_ms"]
    assert result["caffe_gflops"] == pytest.approx(2.9128704 / 0.255)
    assert result["per_layer_ms"]["conv1"]["forward_gflops"] == pytest.approx(0.82944 / 0.010)
    assert "conv1 bwd 12.0 ms" in bench_train.summary_table(result)


def test_missing_torch_is_one_clear_line(monkeypatch, capsys, tmp_path):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find_spec(name, *a))
    assert bench_train.main(["--iters", "1", "--repeats", "1", "--out", str(tmp_path / "x.json")]) == 1
    assert capsys.readouterr().err.strip() == bench_train.TORCH_MISSING
    assert not (tmp_path / "x.json").exists()


def test_tiny_run_writes_the_json(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "train_step.json"
    assert bench_train.main(["--iters", "2", "--repeats", "1", "--warmup", "1", "--threads", "1",
                             "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(KEYS) <= set(result)
    assert result["ratio"] == result["caffe_ms"] / result["torch_ms"]
    assert len(result["caffe_ms_all"]) == len(result["torch_ms_all"]) == 2
    assert result["batch"] == 128 and result["act"] == "relu" and result["solver"] == "sgd"
    assert result["threads"]["caffe"]["OPENBLAS_NUM_THREADS"] == "1"
    assert result["threads"]["torch"]["set_num_threads"] == 1
    assert {"conv1", "conv2", "conv3"} <= set(result["per_layer_ms"])
    assert result["gflop_per_iter"] == pytest.approx(2.9128704)
    assert result["peak"]["gflops"] > 0
    assert "ratio caffe/torch" in capsys.readouterr().out
