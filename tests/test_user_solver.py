"""A user's own solver prototxt as a variant (issue #25): its optimisation fields reach Caffe, the
harness keeps its own net, data, test and snapshot fields and says so, the run is named after the
file, the manifest keeps the file, a resume refuses a changed file and continues an unchanged one
byte-exactly; bad files are one line."""
import json
import os
import shlex
import subprocess

import pytest
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from core.config import ROOT, ConfigError
from core.names import grid_runs
from tests.helpers import FAST
from tools.train import main as train_main

pytestmark = [pytest.mark.slow, pytest.mark.blas]

MY_ADAM = """net: "someone_elses_net.prototxt"
type: "Adam"
base_lr: 0.0005
momentum2: 0.99
lr_policy: "step"
gamma: 0.5
stepsize: 5
snapshot: 7
max_iter: 20
"""


def args(data_root, run, solver_file, *extra):
    return ["--dataset", "toy", "--act", "rrelu", "--solver-file", str(solver_file),
            "--data-root", str(data_root), "--run-dir", str(run), *extra, *FAST]


def test_a_solver_file_trains_as_a_variant_named_after_it(data_root, tmp_path, capsys):
    solver_file = tmp_path / "my_adam.prototxt"
    solver_file.write_text(MY_ADAM)
    assert train_main(args(data_root, tmp_path / "run", solver_file)) == 0
    out = capsys.readouterr().out
    for kept in ("net", "snapshot"):
        assert f"{solver_file}: {kept} is the harness's own (not taken from the file)" in out
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["solver"] == "my_adam" and manifest["solver_file"]["text"] == MY_ADAM
    assert manifest["iterations_done"] == 20  # the file's max_iter
    param = text_format.Parse((tmp_path / "run" / "solver.prototxt").read_text(), caffe_pb2.SolverParameter())
    assert (param.type, param.lr_policy, param.stepsize) == ("Adam", "step", 5)
    assert param.base_lr == pytest.approx(5e-4) and param.momentum2 == pytest.approx(0.99)
    assert param.net.endswith("train_val.prototxt") and param.snapshot == 0  # the harness's


def test_a_resume_continues_the_same_file_byte_exactly_and_refuses_a_changed_one(data_root, tmp_path, capsys):
    solver_file = tmp_path / "my_adam.prototxt"
    solver_file.write_text(MY_ADAM)
    assert train_main(args(data_root, tmp_path / "whole", solver_file)) == 0
    assert train_main(args(data_root, tmp_path / "parts", solver_file, "--iters", "10")) == 0
    assert train_main(args(data_root, tmp_path / "parts", solver_file, "--resume")) == 0
    name = "snapshots/srcnn_iter_20.caffemodel"
    assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "parts" / name).read_bytes()
    solver_file.write_text(MY_ADAM.replace("0.0005", "0.001"))
    capsys.readouterr()
    assert train_main(args(data_root, tmp_path / "parts", solver_file, "--resume", "--iters", "30")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained with another solver file" in err[0]


@pytest.mark.parametrize("text,message", [
    ('type: "LBFGS"\nbase_lr: 0.1\n', "is not one of Caffe's solver types"),
    ('net: "x.prototxt"\nsnapshot: 3\n', "sets no optimisation field"),
    ('base_lr: 0.1\nmomentum 0.9\n', "not a solver prototxt: 2:"),
])
def test_a_bad_solver_file_is_one_line(data_root, tmp_path, capsys, text, message):
    solver_file = tmp_path / "mine.prototxt"
    solver_file.write_text(text)
    assert train_main(args(data_root, tmp_path / "run", solver_file)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train: error:") and message in err[0]
    assert not (tmp_path / "run").exists()


# make grid SOLVER_FILES= ------------------------------------------------------------------------

def test_a_grid_run_finds_its_solver_file_by_the_stem(data_root, tmp_path):
    solver_file = tmp_path / "my_adam.prototxt"
    solver_file.write_text(MY_ADAM)
    run = tmp_path / "run"
    argv = ["--grid-run", "toy-relu-my_adam-0", "--grid-solver-file", str(solver_file),
            "--data-root", str(data_root), "--run-dir", str(run), "--iters", "10", *FAST]
    assert train_main(argv) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert (manifest["act"], manifest["solver"]) == ("relu", "my_adam")
    assert manifest["solver_file"]["sha256"] and manifest["solver_file"]["type"] == "Adam"


def test_make_grid_solver_files_adds_each_file_with_the_papers_two_activations(tmp_path):
    (tmp_path / "my_adam.prototxt").write_text(MY_ADAM)
    (tmp_path / "slow.prototxt").write_text('type: "SGD"\nbase_lr: 0.00001\nmomentum: 0.9\n')
    # relative names are the caller's: make -C from a folder outside the checkout
    proc = subprocess.run(["make", "-s", "-n", "-C", str(ROOT), "grid", "DATASETS=prostate",
                           "SOLVER_FILES=my_adam.prototxt slow.prototxt"],
                          cwd=tmp_path, env=dict(os.environ, PWD=str(tmp_path)),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    runs = grid_runs("paper", ["prostate"], 1, (), ["my_adam.prototxt", "slow.prototxt"])
    assert runs[:2] == grid_runs("paper", ["prostate"], 1)  # the paper's two stay
    assert {r.split("-")[2] for r in runs[2:]} == {"my_adam", "slow"} and len(runs) == 6
    for r in runs:
        assert f"--grid-run {r}" in proc.stdout
    assert f"--grid-solver-file '{tmp_path / 'my_adam.prototxt'}'" in proc.stdout
    assert "solver file: my_adam.prototxt" not in proc.stderr  # read by its full path


@pytest.mark.parametrize("files, message", [
    (["my-adam.prototxt"], "without '-'"), (["sgd.prototxt"], "built-in solver 'sgd'"),
    (["a/x.prototxt", "b/x.prototxt"], "two solver files are named 'x'"),
    (["a=b.prototxt"], "letters, digits")])
def test_grid_solver_file_names_a_run_cannot_carry_are_refused(files, message):
    with pytest.raises(ConfigError, match=message):
        grid_runs("paper", ["prostate"], 1, (), files)


def test_make_grid_refuses_a_bad_solver_file_before_any_run(tmp_path):
    (tmp_path / "broken.prototxt").write_text('type: "LBFGS"\nbase_lr: 0.1\n')
    proc = subprocess.run(["make", "-s", "-n", "-C", str(ROOT), "grid", "DATASETS=prostate",
                           f"SOLVER_FILES={tmp_path / 'broken.prototxt'}"], capture_output=True, text=True)
    assert proc.returncode != 0 and "--grid-run" not in proc.stdout
    assert "solver file: error:" in proc.stderr and "'LBFGS' is not one of Caffe's" in proc.stderr


def test_slurm_tasks_get_the_solver_files(tmp_path):
    (tmp_path / "my_adam.prototxt").write_text(MY_ADAM)
    proc = subprocess.run(["make", "-s", "-C", str(ROOT), "grid", "SCHEDULER=slurm", "DRY_RUN=1",
                           "DATASETS=prostate", f"SOLVER_FILES={tmp_path / 'my_adam.prototxt'}"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    array, evaluation = [shlex.split(ln) for ln in proc.stdout.splitlines() if ln.startswith("sbatch ")]
    assert "prostate-rrelu-my_adam-0" in array and "--array=0-3" in array
    assert f"--grid-solver-file={tmp_path / 'my_adam.prototxt'}" in array[array.index("--"):]
    assert f"SOLVER_FILES={tmp_path / 'my_adam.prototxt'}" in evaluation[-2]
