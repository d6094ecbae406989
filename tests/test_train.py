"""The trainer: manifest and snapshots, exact resume after a real SIGINT, the grid, the runs the
curves read."""
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import caffe
import numpy as np
import pytest
from tqdm import tqdm

from core.config import ADDED_KEYS, DEFAULT, ROOT
from core.machine import machine
from tests.helpers import FAST
from tools.curves import load_runs
from tools.train import auto_act_layer, main as train_main
from tools.train_progress import StepTimes, progress_style

pytestmark = pytest.mark.blas  # numbers summed by OpenBLAS (tools/blas_kernels.py)


def train_args(data_root, run_dir, iters, *extra):
    return ["--dataset", "toy", "--act", "rrelu", "--solver", "nesterov", "--iters", str(iters),
            "--data-root", str(data_root), "--run-dir", str(run_dir), *extra, *FAST]


def test_short_run_writes_manifest_and_snapshots(data_root, tmp_path):
    assert train_main(train_args(data_root, tmp_path / "run", 20)) == 0
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["status"] == "done" and m["iterations_done"] == 20
    assert [t["iter"] for t in m["tests"]] == [10, 20]
    assert all(np.isfinite(t["psnr"]) and 0 < t["ssim"] <= 1 and len(t["images"]) == 2 for t in m["tests"])
    assert m["bicubic"]["psnr"] > 0 and m["config"]["batch_train"] == 16 and m["caffe"]["version"]
    assert m["machines"] == [{"from_iter": 0, **machine()}]  # the CPU and OpenBLAS kernels it ran on
    assert [s["iter"] for s in m["snapshots"]] == [10, 20]
    # paths relative to the run directory, so that a copy of it is a copy
    assert all(not os.path.isabs(s[k]) and (tmp_path / "run" / s[k]).is_file()
               for s in m["snapshots"] for k in ("caffemodel", "solverstate"))
    # Every step timed as the bench times them; the steps alone take less than the wall time.
    timing = m["step_time"]
    assert timing["steps"] == 20 and timing["median_ms"] > 0
    assert timing["mean_ms"] * 20 / 1000 < m["wall_time_s"]


def test_step_times_keep_the_most_recent_steps(monkeypatch):
    clock = iter([1.0, 1.5, 4.0, 4.25])  # perf_counter at each add(): steps of 1000, 500, 500 and 250 ms
    monkeypatch.setattr("tools.train_progress.time.perf_counter", lambda: next(clock))
    steps = StepTimes(keep=2)
    assert steps.summary() == {}
    for start in (0.0, 1.0, 3.5, 4.0):
        steps.add(start)
    assert steps.summary() == {"median_ms": 375.0, "mean_ms": 375.0, "steps": 2}


def run_cli(args, **kwargs):
    env = dict(os.environ, GLOG_minloglevel="2")
    return subprocess.Popen([sys.executable, "-m", "tools.train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(path, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.mark.slow
def test_sigint_then_resume_is_byte_identical_to_an_uninterrupted_run(data_root, tmp_path):
    iters = 300
    straight = run_cli(train_args(data_root, tmp_path / "run_a", iters))
    interrupted = run_cli(train_args(data_root, tmp_path / "run_b", iters))
    wait_for(tmp_path / "run_b" / "snapshots" / "srcnn_iter_20.caffemodel")
    interrupted.send_signal(signal.SIGINT)
    out, err = interrupted.communicate(timeout=120)
    assert interrupted.returncode == 128 + signal.SIGINT, err
    assert re.search(r"SIGINT at iteration \d+", out)
    stopped = json.loads((tmp_path / "run_b" / "manifest.json").read_text())
    assert stopped["status"] == "interrupted" and 20 <= stopped["iterations_done"] < iters

    resumed = run_cli(train_args(data_root, tmp_path / "run_b", iters, "--resume"))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert straight.wait(timeout=300) == 0, straight.stderr.read()
    final = f"snapshots/srcnn_iter_{iters}"
    for ext in (".caffemodel", ".solverstate"):
        a = (tmp_path / "run_a" / (final + ext)).read_bytes()
        b = (tmp_path / "run_b" / (final + ext)).read_bytes()
        if ext == ".solverstate":  # it names its own .caffemodel, in the other run's directory
            a = a.replace(b"run_a", b"run_b")
        assert a == b, ext
    m = json.loads((tmp_path / "run_b" / "manifest.json").read_text())
    assert [t["iter"] for t in m["tests"]] == list(range(10, iters + 1, 10))
    assert len(m["machines"]) == 1  # resumed on the same machine and kernels: one entry


def test_a_run_older_than_a_config_key_resumes_but_a_changed_config_does_not(data_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(train_args(data_root, run, 10)) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    for key in ADDED_KEYS:  # as a manifest written before those keys existed
        del manifest["config"][key]
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert train_main(train_args(data_root, run, 20, "--resume")) == 0
    assert json.loads((run / "manifest.json").read_text())["iterations_done"] == 20
    assert train_main(train_args(data_root, run, 30, "--resume", "residual=true")) == 2
    assert "another config" in capsys.readouterr().err


def test_the_fused_layer_on_a_caffe_without_it_is_one_line(data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(caffe, "layer_type_list", lambda: ["ReLU"])
    assert train_main(train_args(data_root, tmp_path / "run", 5, "rrelu_layer=fused")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rrelu_layer=graph" in err[0] and not (tmp_path / "run").exists()


def test_a_diverging_run_stops_with_one_line_and_no_nan_snapshot(data_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(train_args(data_root, run, 40, "base_lr=10")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert re.fullmatch(r"train: error: the loss is (nan|inf) at iteration \d+: the run diverged "
                        r"\(lower base_lr\?\); no snapshot was written; manifest: .*", err[-1])
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "diverged" and manifest["diverged_at"] < 10
    assert manifest["snapshots"] == [] and not list(run.glob("snapshots/*.caffemodel"))


def test_existing_run_needs_resume_or_force(data_root, tmp_path, capsys):
    assert train_main(train_args(data_root, tmp_path / "run", 5)) == 0
    assert train_main(train_args(data_root, tmp_path / "run", 5)) == 2
    err = capsys.readouterr().err
    # both ways, the flag and what make passes it as (make train takes no --resume)
    assert "--resume" in err and "RESUME=1" in err and "FORCE=1" in err


@pytest.mark.parametrize("given, passed", [
    (["RESUME=1"], ["--resume"]), (["FORCE=1"], ["--force"]),
    (["RESUME_FROM=10"], ["--resume", "--resume-from=10"])])
def test_make_train_passes_resume_and_force(given, passed):
    """The trainer's advice names RESUME=, RESUME_FROM= and FORCE=: make train passes them on."""
    done = subprocess.run(["make", "-s", "-n", "-C", str(ROOT), "train", "DATASET=prostate",
                           "ACT=relu", "SOLVER=sgd", *given], capture_output=True, text=True)
    words = done.stdout.split()
    assert done.returncode == 0 and all(w in words for w in passed), done.stdout


def test_a_folder_that_is_not_a_run_is_never_replaced(data_root, tmp_path, capsys):
    """--force replaces a run directory, never a folder of someone's files named by mistake;
    an empty folder, or one a killed start left with only generated nets, is taken."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    assert train_main(train_args(data_root, tmp_path / "mine", 5, "--force")) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"
    (tmp_path / "empty").mkdir()
    assert train_main(train_args(data_root, tmp_path / "empty", 5)) == 0


@pytest.mark.parametrize("bad", [["--dataset", "nope"], ["--act", "tanh"], ["--solver", "lbfgs"]])
def test_bad_names_give_one_clear_line(data_root, tmp_path, capsys, bad):
    args = train_args(data_root, tmp_path / "run", 5)
    i = args.index(bad[0])
    args[i + 1] = bad[1]
    assert train_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train: error:") and bad[1] in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag,value", [("--resume-from", "abc"), ("--iters", "ten"), ("--seed", "1.5")])
def test_a_number_that_is_not_one_is_one_line_naming_it(data_root, tmp_path, capsys, flag, value):
    """Not argparse's usage screen: one line, exit 2 (issue #32, the noise list)."""
    with pytest.raises(SystemExit) as exit_:
        train_main([*train_args(data_root, tmp_path / "run", 5), "--resume", flag, value])
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and not captured.out
    assert captured.err.splitlines() == [f"train: error: argument {flag}: invalid int value: '{value}'"]


def make_grid_runs(*variables):
    """(dataset, act, solver, seed) of every run `make -n grid VARIABLES` would start."""
    out = subprocess.run(["make", "-n", "grid", *variables], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return re.findall(r"tools\.train --resume\s*\\?\s*--grid-run (\w+)-(\w+)-(\w+)-(\d+)", out)


def test_make_grid_lists_independent_runs():
    full = make_grid_runs("GRID=full")
    assert len(full) == 12 and len(set(full)) == 12
    assert {r[1] for r in full} == {"relu", "rrelu"} and {r[2] for r in full} == {"sgd", "nesterov"}
    paper = make_grid_runs()  # the default: the paper's net and its ReLU + SGD baseline
    assert sorted({r[1:3] for r in paper}) == [("relu", "sgd"), ("rrelu", "nesterov")]
    assert {r[0] for r in paper} == {"brain", "prostate", "breast"} and len(paper) == 6
    seeds = make_grid_runs("SEEDS=3", "DATASETS=prostate")
    assert sorted(seeds) == sorted((("prostate",) + v + (str(k),)) for v in
                                   (("rrelu", "nesterov"), ("relu", "sgd")) for k in range(3))


def test_make_grid_refuses_an_unknown_data_set_before_running_anything():
    proc = subprocess.run(["make", "-n", "grid", "DATASETS=prostate liver"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "unknown data set 'liver'" in proc.stderr
    assert "tools.train" not in proc.stdout


class FakeStream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_progress_is_a_bar_on_its_own_terminal_and_lines_elsewhere():
    assert progress_style({}, FakeStream(tty=True)) == {"dynamic_ncols": True, "mininterval": 0.1}
    for env, tty in (({}, False), ({"MEDSR_PROGRESS": "lines"}, True)):
        stream = FakeStream(tty)
        style = progress_style({**env, "MEDSR_PROGRESS_S": "0"}, stream)
        with tqdm(total=3, desc="toy rrelu nesterov", **style) as bar:
            for _ in range(3):
                bar.update(1)
        lines = stream.getvalue().splitlines()
        assert "\r" not in stream.getvalue() and len(lines) >= 2  # one line per redraw, no overdraw
        assert all(line.startswith("toy rrelu nesterov:") for line in lines)
        assert "3/3" in lines[-1]


def test_make_j2_grid_runs_print_lines_and_make_j1_a_bar():
    def recipe(*flags):
        out = subprocess.run(["make", "-n", *flags, "grid-prostate-rrelu-nesterov-0"], cwd=ROOT,
                             capture_output=True, text=True).stdout
        return next(line for line in out.splitlines() if "tools.train" in line)
    assert "MEDSR_PROGRESS=lines" in recipe("-j2")
    assert "MEDSR_PROGRESS" not in recipe("-j1") and "MEDSR_PROGRESS" not in recipe()


def fixture_manifest(act, solver, offset):
    tests = [{"iter": i, "psnr": 30 + offset + np.log10(i), "ssim": 0.9, "loss": 1e-3} for i in (10, 100, 1000)]
    return {"dataset": "toy", "act": act, "solver": solver, "tests": tests, "bicubic": {"psnr": 30.5}}


def test_curves_read_runs_of_either_layout(tmp_path):
    """The curves take every run of a data set, in seed<k> folders and in the older flat layout;
    make reference's long-schedule run and a run without a test point are left out."""
    runs = {"relu_sgd": fixture_manifest("relu", "sgd", 0),
            "rrelu_nesterov/seed1": dict(fixture_manifest("rrelu", "nesterov", 1), seed=1),
            "long_schedule": fixture_manifest("rrelu", "nesterov", 2),
            "rrelu_sgd/seed0": dict(fixture_manifest("rrelu", "sgd", 0), tests=[])}
    for folder, manifest in runs.items():
        (tmp_path / "toy" / folder).mkdir(parents=True)
        (tmp_path / "toy" / folder / "manifest.json").write_text(json.dumps(manifest))
    found = [(m["act"], m["solver"], m.get("seed", 0)) for m in load_runs(tmp_path, "toy")]
    assert sorted(found) == [("relu", "sgd", 0), ("rrelu", "nesterov", 1)]


def snapshot_blobs(run):
    """Every parameter blob's bytes of a run's last caffemodel, by layer name."""
    from caffe.proto import caffe_pb2
    manifest = json.loads((run / "manifest.json").read_text())
    net = caffe_pb2.NetParameter()
    net.ParseFromString((run / manifest["snapshots"][-1]["caffemodel"]).read_bytes())
    return {layer.name: [np.array(b.data, np.float32).tobytes() for b in layer.blobs]
            for layer in net.layer if layer.blobs}


def test_activations_inside_the_convolutions_train_to_the_same_weights(data_root, tmp_path):
    """act_layer=conv (patch 0011) through the trainer: the same weights, bit for bit, and the
    same test scores as the separate layers."""
    runs = {}
    for layer in ("separate", "conv"):
        runs[layer] = tmp_path / layer
        assert train_main(train_args(data_root, runs[layer], 10, f"act_layer={layer}")) == 0
    separate, conv = snapshot_blobs(runs["separate"]), snapshot_blobs(runs["conv"])
    assert set(separate) == {"conv1", "conv2", "conv3"} and separate == conv
    tests = [json.loads((runs[k] / "manifest.json").read_text())["tests"] for k in runs]
    assert tests[0][-1]["psnr"] == tests[1][-1]["psnr"]


def test_a_run_resumes_under_another_build_switch_to_the_same_bytes(data_root, tmp_path):
    """act_layer and rrelu_layer change how Caffe computes, not what: a run started with the
    stock layers resumes with act_layer=auto (the Makefile's) and ends with an uninterrupted
    run's weights; its nets are rebuilt the new way and the manifest says so."""
    straight, switched = tmp_path / "straight", tmp_path / "switched"
    assert train_main(train_args(data_root, straight, 20)) == 0
    assert train_main(train_args(data_root, switched, 10)) == 0
    assert train_main(train_args(data_root, switched, 20, "--resume", "act_layer=auto")) == 0
    assert snapshot_blobs(straight) == snapshot_blobs(switched)
    manifest = json.loads((switched / "manifest.json").read_text())
    assert manifest["config"]["act_layer"] == "conv" and manifest["iterations_done"] == 20
    assert "medsr_activation: RRELU" in (switched / "train_val.prototxt").read_text()


@pytest.mark.parametrize("act, overrides, want", [
    ("rrelu", [], "conv"), ("relu", [], "conv"), ("leaky", [], "separate"), ("prelu", [], "separate"),
    ("rrelu", ["rrelu_draw=channel"], "separate"), ("relu", ["solver_mode=GPU"], "separate")])
def test_auto_puts_activations_inside_convolutions_where_they_can_go(act, overrides, want):
    assert auto_act_layer(act, DEFAULT.with_overrides(["act_layer=auto", *overrides])) == want


def test_auto_keeps_the_separate_layers_on_a_caffe_without_patch_0011(monkeypatch):
    import core.nets
    monkeypatch.setattr(core.nets, "conv_activation_supported", lambda: False)
    assert auto_act_layer("rrelu", DEFAULT) == "separate"


@pytest.mark.parametrize("case", ["unpatched", "prelu"])
def test_activations_inside_convolutions_refused_with_one_line(data_root, tmp_path, capsys,
                                                              monkeypatch, case):
    import core.nets
    args = train_args(data_root, tmp_path / "run", 5, "act_layer=conv")
    if case == "unpatched":
        monkeypatch.setattr(core.nets, "conv_activation_supported", lambda: False)
        want = "patches/0011"
    else:
        args[args.index("rrelu")] = "prelu"
        want = "supports relu and rrelu, not prelu"
    assert train_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and want in err[0] and not (tmp_path / "run").exists()
