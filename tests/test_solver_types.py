"""Caffe's six solver types by name: each has its generated solver file with the fields
its type reads, its own rate where the paper's makes no sense, trains, and resumes byte-exactly;
AdaGrad and RMSProp refuse a momentum (Caffe would abort) with one line; make grid SOLVERS=...
trains each with the paper's two activations."""
import json
import subprocess

import pytest
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from core.config import DEFAULT, ROOT, SOLVER_FIELDS, SOLVER_SETTINGS, SOLVERS, ConfigError, dataset_config
from core.names import grid_runs
from tests.helpers import FAST
from tools.train import main as train_main

pytestmark = pytest.mark.blas

SOLVER_ONLY_FIELDS = ("momentum", "momentum2", "delta", "rms_decay")


@pytest.mark.parametrize("solver", SOLVERS)
def test_each_generated_solver_file_has_its_type_and_only_the_fields_it_reads(solver):
    param = caffe_pb2.SolverParameter()
    text_format.Parse((ROOT / "solvers" / "prostate" / f"srcnn_rrelu_{solver}.prototxt").read_text(), param)
    cfg = dataset_config("prostate", solver=solver)
    assert param.type == SOLVERS[solver] and param.base_lr == pytest.approx(cfg.base_lr)
    present = {f for f in SOLVER_ONLY_FIELDS if param.HasField(f)}
    assert present == set(SOLVER_FIELDS[solver])  # AdaGrad's and RMSProp's momentum stays unset: 0
    for field in SOLVER_FIELDS[solver]:
        assert getattr(param, field) == pytest.approx(getattr(cfg, field))


def test_adaptive_solvers_get_their_own_rate_and_the_paper_keeps_its_own():
    assert dataset_config("prostate", solver="sgd").base_lr == DEFAULT.base_lr
    assert dataset_config("prostate", solver="nesterov").base_lr == DEFAULT.base_lr
    for solver in SOLVER_SETTINGS:
        assert dataset_config("prostate", solver=solver).base_lr != DEFAULT.base_lr
    assert dataset_config("prostate", ["base_lr=5e-4"], solver="adam").base_lr == 5e-4  # the user's wins


@pytest.mark.parametrize("solver", ["adagrad", "rmsprop"])
def test_a_momentum_where_caffe_takes_none_is_one_line(solver):
    with pytest.raises(ConfigError, match=f"{solver} takes no momentum"):
        dataset_config("prostate", ["momentum=0.9"], solver=solver)


@pytest.mark.slow
@pytest.mark.parametrize("solver", SOLVERS)
def test_each_solver_type_trains_and_resumes_byte_exactly(solver, data_root, tmp_path):
    def run(folder, iters, *extra):
        return train_main(["--dataset", "toy", "--act", "rrelu", "--solver", solver, "--iters", str(iters),
                           "--data-root", str(data_root), "--run-dir", str(tmp_path / folder), *extra, *FAST])
    assert run("whole1", 20) == 0
    assert run("parts2", 10) == 0 and run("parts2", 20, "--resume") == 0
    for ext in (".caffemodel", ".solverstate"):
        a = (tmp_path / "whole1" / "snapshots" / f"srcnn_iter_20{ext}").read_bytes()
        b = (tmp_path / "parts2" / "snapshots" / f"srcnn_iter_20{ext}").read_bytes()
        assert a.replace(b"whole1", b"parts2") == b, ext
    manifest = json.loads((tmp_path / "whole1" / "manifest.json").read_text())
    assert manifest["solver"] == solver and manifest["tests"][-1]["psnr"] > 0


def test_make_grid_solvers_trains_each_with_the_papers_two_activations():
    runs = grid_runs("paper", ["prostate"], 1, ["sgd", "nesterov", "adam"])
    assert sorted(runs) == sorted(f"prostate-{a}-{s}-0" for a in ("rrelu", "relu")
                                  for s in ("sgd", "nesterov", "adam"))
    out = subprocess.run(["make", "-s", "-n", "grid", "SOLVERS=sgd nesterov adam", "DATASETS=prostate"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert all(f"--grid-run {r}" in out for r in runs)
    with pytest.raises(ConfigError, match="unknown solver 'lbfgs'"):
        grid_runs("paper", ["prostate"], 1, ["lbfgs"])
