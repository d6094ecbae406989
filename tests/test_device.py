"""Device selection (core/device.py, --gpu, make gpu-check) on any machine: GPU 99 exists nowhere,
so asking for it is refused with one line by a CPU-only build and by a CUDA build alike, before
anything is written; the GPU-vs-CPU comparison of make gpu-check is exercised CPU against CPU."""
import json
import os
import subprocess
import sys

import pytest

from core.config import ROOT
from core.device import DeviceError, check_gpu, machine_gpus, probe_message
from tests.helpers import FAST
from tools import gpu_check
from tools.bench_engines import write_patches
from tools.train import main as train_main

MISSING = 99


def test_probe_messages_name_the_cause():
    cpu_only = "F1125 common.cpp:66] Cannot use GPU in CPU-only Caffe: check mode.\n*** Check failure"
    assert "make setup GPU=1" in probe_message(cpu_only, 0)
    driver = ("F1125 common.cpp:136] Check failed: error == cudaSuccess (35 vs. 0)  CUDA driver "
              "version is insufficient for CUDA runtime version\n*** Check failure stack trace: ***")
    line = probe_message(driver, 1)
    assert line.startswith("GPU 1 cannot be used") and "insufficient" in line and "***" not in line
    assert "\n" not in probe_message("", 2)


def test_a_missing_gpu_is_refused_with_one_line():
    with pytest.raises(DeviceError) as e:
        check_gpu(MISSING)
    assert "\n" not in str(e.value) and ("CPU-only" in str(e.value) or f"GPU {MISSING}" in str(e.value))
    with pytest.raises(DeviceError):
        check_gpu(-1)


def test_train_on_a_missing_gpu_writes_nothing(data_root, tmp_path, capsys):
    args = ["--dataset", "toy", "--act", "rrelu", "--solver", "nesterov", "--iters", "5",
            "--data-root", str(data_root), "--run-dir", str(tmp_path / "run"), "--gpu", str(MISSING),
            *FAST]
    assert train_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train: error:")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("module", ["eval", "inference.upscale"])
def test_gpu_with_the_opencv_engine_is_a_usage_error(module, tmp_path):
    args = {"eval": ["--hr", str(tmp_path), "--engine", "opencv", "--gpu", "0"],
            "inference.upscale": ["--in", "a.png", "--out", "b.png", "--run", str(tmp_path),
                             "--engine", "opencv", "--gpu", "0"]}[module]
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "--gpu needs --engine caffe" in out.stderr


def fake_nvidia_smi(directory, listing):
    """An ``nvidia-smi`` on PATH that prints ``listing``."""
    script = directory / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '{listing}'\n")
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{directory}:{os.environ['PATH']}", "GLOG_minloglevel": "2"}


def test_machine_gpus_reads_nvidia_smi(tmp_path, monkeypatch):
    env = fake_nvidia_smi(tmp_path, "GPU 0: Fake GPU (UUID: GPU-1)\\nGPU 1: Fake GPU (UUID: GPU-2)\\n")
    monkeypatch.setenv("PATH", env["PATH"])
    assert machine_gpus() == ["GPU 0: Fake GPU (UUID: GPU-1)", "GPU 1: Fake GPU (UUID: GPU-2)"]
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert machine_gpus() == []


def test_gpu_check_without_a_gpu_says_so_and_succeeds(tmp_path):
    env = fake_nvidia_smi(tmp_path, "")
    out = subprocess.run(["make", "--no-print-directory", "gpu-check"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().splitlines() == [
        "gpu-check: no GPU on this machine (nvidia-smi lists none): nothing to check"]


def test_gpu_check_refuses_a_gpu_this_build_or_machine_cannot_use(tmp_path):
    env = fake_nvidia_smi(tmp_path, "GPU 0: Fake GPU (UUID: GPU-1)\\n")
    out = subprocess.run([sys.executable, "-m", "tools.gpu_check", "--gpu", str(MISSING),
                          "--out", str(tmp_path / "c.json")], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    err = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(err) == 1 and err[0].startswith("gpu-check: error:")
    assert not (tmp_path / "c.json").exists()


def test_the_loss_comparison_is_exact_for_two_cpu_runs(tmp_path):
    from core.config import DEFAULT

    _, listing = write_patches(tmp_path, DEFAULT)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    curves = [gpu_check.loss_curve(tmp_path / name, listing, 6, None) for name in ("a", "b")]
    assert curves[0] == curves[1] and len(set(curves[0])) > 1
    result = {"loss": {"iters": 6, "max_rel_diff": 0.0, "rtol": gpu_check.LOSS_RTOL, "ok": True},
              "step_ms": {"caffe_cpu": 30.0, "caffe_gpu": 1.5, "torch_gpu": "torch is not installed"}}
    text = gpu_check.report(result)
    assert "ok" in text and "(20.0x)" in text and "not measured (torch is not installed)" in text
    json.dumps(result)
