"""A user's own solver prototxt as a variant (issue #25): its optimisation fields reach Caffe, the
harness keeps its own net, data, test and snapshot fields and says so, the run is named after the
file, the manifest keeps the file, a resume refuses a changed file and continues an unchanged one
byte-exactly; bad files are one line."""
import json

import pytest
from caffe.proto import caffe_pb2
from google.protobuf import text_format

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
