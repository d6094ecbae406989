"""Solver files are checked as SET= overrides are (issue #32, case 5): every number in its range
(core.config POSITIVE / NON_NEGATIVE), NaN and inf refused, a learning-rate policy Caffe knows with
the fields it reads, the type's own rules; refused with one line before anything is written, by
the trainer and by `python -m core.user_solver` (make grid's check before any run starts). A
built-in solver is checked the same way, as Caffe reads it (32-bit floats)."""
import os
import subprocess
import sys

import pytest

from core.config import DEFAULT, ROOT, ConfigError
from core.user_solver import main as user_solver_main
from tests.helpers import FAST
from tools.train import main as train_main

# (file text, what the one line says): each trains on Caffe without a word, or aborts it
BAD_FILES = {
    "negative_rate": ("base_lr: -0.001\n", "base_lr must be positive, got -0.001"),
    "zero_rate": ("base_lr: 0\n", "base_lr must be positive, got 0"),
    "nan_rate": ("base_lr: nan\n", "base_lr must be finite, got nan"),
    "infinite_gamma": ('base_lr: 0.01\nlr_policy: "exp"\ngamma: inf\n', "gamma must be finite"),
    "tiny_rate": ("base_lr: 1e-50\n", "base_lr must be positive, got 0"),  # 0 as a 32-bit float
    "zero_iter_size": ("base_lr: 0.01\niter_size: 0\n", "iter_size must be positive, got 0"),
    "adagrad_momentum": ('type: "AdaGrad"\nbase_lr: 0.01\nmomentum: 0.9\n',
                         "AdaGrad takes no momentum (Caffe refuses one)"),
    "rmsprop_momentum": ('type: "RMSProp"\nbase_lr: 0.01\nmomentum: 0.5\n', "RMSProp takes no momentum"),
    "rmsprop_decay": ('type: "RMSProp"\nbase_lr: 0.01\nrms_decay: 1\n', "rms_decay must lie in [0, 1), got 1"),
    "adam_beta2": ('type: "Adam"\nbase_lr: 0.001\nmomentum2: 1\n', "momentum2 must lie in [0, 1), got 1"),
    "adam_delta": ('type: "Adam"\nbase_lr: 0.001\ndelta: 0\n', "delta must be positive, got 0"),
    "adadelta_decay": ('type: "AdaDelta"\nbase_lr: 1\nmomentum: 1\n', "momentum must be below 1"),
    "step_without_stepsize": ('base_lr: 0.01\nlr_policy: "step"\ngamma: 0.1\n',
                              "lr_policy 'step' needs gamma and stepsize (rate = base_lr * gamma ^ "
                              "floor(iter / stepsize)): stepsize is not set"),
    "sigmoid_step_zero": ('base_lr: 0.01\nlr_policy: "sigmoid"\ngamma: 0.1\nstepsize: 0\n',
                          "lr_policy 'sigmoid' needs stepsize > 0"),
    "exp_without_gamma": ('base_lr: 0.01\nlr_policy: "exp"\n', "lr_policy 'exp' needs gamma"),
    "inv_without_power": ('base_lr: 0.01\nlr_policy: "inv"\ngamma: 0.1\n', "power is not set"),
    "poly_without_power": ('base_lr: 0.01\nlr_policy: "poly"\n', "lr_policy 'poly' needs power"),
    "multistep_unordered": ('base_lr: 0.01\nlr_policy: "multistep"\ngamma: 0.1\nstepvalue: 20\nstepvalue: 10\n',
                            "stepvalues in increasing order, got [20, 10]"),
    "unknown_policy": ('base_lr: 0.01\nlr_policy: "bogus"\n', "lr_policy 'bogus' is not one of Caffe's"),
    "negative_power": ('base_lr: 0.01\nlr_policy: "poly"\npower: -1\n', "power must be >= 0"),
    "zero_clip": ("base_lr: 0.01\nclip_gradients: 0\n", "clip_gradients must not be 0"),
    "unknown_regularization": ('base_lr: 0.01\nweight_decay: 0.1\nregularization_type: "L3"\n',
                               "regularization_type 'L3' is not one of Caffe's"),
    "zero_max_iter": ("base_lr: 0.01\nmax_iter: 0\n", "max_iter must be positive, got 0"),
}
# The ones Caffe aborts on (a failed CHECK or LOG(FATAL): SIGABRT) where nothing checks them
# first: the trainer is tested on them in a child process
ABORTING = ("adagrad_momentum", "rmsprop_momentum", "rmsprop_decay", "step_without_stepsize",
            "sigmoid_step_zero", "unknown_policy", "unknown_regularization")


def write(tmp_path, name):
    path = tmp_path / f"{name}.prototxt"
    path.write_text(BAD_FILES[name][0])
    return path


def one_error_line(capsys, prog):
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error:"), err
    return err[0]


@pytest.mark.parametrize("name", BAD_FILES)
def test_a_bad_solver_file_is_one_line_before_any_run(tmp_path, capsys, name):
    """`python -m core.user_solver`, as make grid runs it before any run of the grid starts."""
    path = write(tmp_path, name)
    assert user_solver_main([str(path)]) == 2
    line = one_error_line(capsys, "solver file")
    assert f"{path}: " in line and BAD_FILES[name][1] in line


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in BAD_FILES if n not in ABORTING])
def test_the_trainer_refuses_a_bad_solver_file_with_one_line(data_root, tmp_path, capsys, name):
    path = write(tmp_path, name)
    argv = ["--dataset", "toy", "--act", "relu", "--solver-file", str(path), "--data-root", str(data_root),
            "--run-dir", str(tmp_path / "run"), "--iters", "10", *FAST]
    assert train_main(argv) == 2
    line = one_error_line(capsys, "train")
    assert f"{path}: " in line and BAD_FILES[name][1] in line
    assert not (tmp_path / "run").exists()


def run_trainer(argv):
    return subprocess.run([sys.executable, "-m", "tools.train", *argv], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, GLOG_minloglevel="2"), timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("name", ABORTING)
def test_a_solver_file_caffe_aborts_on_is_refused_before_caffe_gets_it(data_root, tmp_path, name):
    path = write(tmp_path, name)
    proc = run_trainer(["--dataset", "toy", "--act", "relu", "--solver-file", str(path), "--data-root",
                        str(data_root), "--run-dir", str(tmp_path / "run"), "--iters", "10", *FAST])
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"train: error: {path}: ") and BAD_FILES[name][1] in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_an_adagrad_file_without_momentum_trains_without_the_harness_sgd_momentum(data_root, tmp_path):
    """The harness's fields under a file are SGD's: its momentum 0.9 is none of AdaGrad's, which
    refuses one (Caffe aborted on such a file)."""
    path = tmp_path / "my_adagrad.prototxt"
    path.write_text('type: "AdaGrad"\nbase_lr: 0.01\n')
    run = tmp_path / "run"
    proc = run_trainer(["--dataset", "toy", "--act", "relu", "--solver-file", str(path), "--data-root",
                        str(data_root), "--run-dir", str(run), "--iters", "10", *FAST])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "momentum" not in (run / "solver.prototxt").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["negative_rate", "adagrad_momentum", "step_without_stepsize", "unknown_policy"])
def test_make_grid_refuses_the_file_before_any_run(tmp_path, name):
    path = write(tmp_path, name)
    proc = subprocess.run(["make", "-s", "-n", "-C", str(ROOT), "grid", "DATASETS=prostate",
                           f"SOLVER_FILES={path}"], capture_output=True, text=True)
    assert proc.returncode != 0 and "--grid-run" not in proc.stdout
    assert f"solver file: error: {path}: " in proc.stderr and BAD_FILES[name][1] in proc.stderr


def test_the_check_takes_the_config_a_file_trains_under(tmp_path, capsys):
    """A policy's fields may come from the harness (SET=, given to python -m core.user_solver as
    -- KEY=VALUE) where the file sets none; a file that sets what the check takes is accepted."""
    path = tmp_path / "steps.prototxt"
    path.write_text('base_lr: 0.01\nlr_policy: "step"\nstepsize: 10\n')
    assert user_solver_main([str(path)]) == 2
    assert "gamma is not set" in one_error_line(capsys, "solver file")
    assert user_solver_main([str(path), "--", "lr_policy=step", "stepsize=5", "gamma=0.5"]) == 0
    assert user_solver_main([str(path), "--", "lr_policy=step", "stepsize=5", "gamma=0"]) == 2
    assert "gamma must be positive" in one_error_line(capsys, "solver file")
    good = tmp_path / "good.prototxt"
    good.write_text('type: "Adam"\nbase_lr: 0.001\nlr_policy: "multistep"\ngamma: 0.5\nstepvalue: 5\n'
                    'stepvalue: 9\nclip_gradients: -1\niter_size: 2\nweight_decay: 0\n')
    assert user_solver_main([str(good)]) == 0


# Caffe's policies (sgd_solver.cpp, GetLearningRate) and the fields each reads besides base_lr
CAFFE_POLICIES = {"fixed": (), "step": ("gamma", "stepsize"), "exp": ("gamma",), "inv": ("gamma", "power"),
                  "multistep": ("gamma", "stepvalue"), "poly": ("power",), "sigmoid": ("gamma", "stepsize")}
FIELD_LINES = {"gamma": "gamma: 0.5\n", "stepsize": "stepsize: 5\n", "power": "power: 1\n",
               "stepvalue": "stepvalue: 5\n"}


@pytest.mark.parametrize("policy", CAFFE_POLICIES)
def test_each_policy_needs_the_fields_caffe_reads_for_it(tmp_path, capsys, policy):
    path = tmp_path / "policy.prototxt"
    whole = f'base_lr: 0.01\nlr_policy: "{policy}"\n' + "".join(FIELD_LINES[f] for f in CAFFE_POLICIES[policy])
    path.write_text(whole)
    assert user_solver_main([str(path)]) == 0
    for missing in CAFFE_POLICIES[policy]:
        path.write_text(whole.replace(FIELD_LINES[missing], ""))
        assert user_solver_main([str(path)]) == 2
        assert f"lr_policy '{policy}' needs" in (line := one_error_line(capsys, "solver file"))
        assert f"{missing} is not set" in line


@pytest.mark.slow
def test_a_built_in_solver_is_checked_as_caffe_reads_it(data_root, tmp_path, capsys):
    """SET="base_lr=1e-50" is a positive double and a 32-bit 0: Caffe would train nothing. An
    iteration count beyond 32 bits cannot be written into Caffe's solver."""
    from core.solvers import check_solver
    with pytest.raises(ConfigError, match=r"base_lr must be positive, got 0.0 \(as Caffe reads"):
        check_solver(DEFAULT.with_overrides(["base_lr=1e-50"]), "nesterov")
    argv = ["--dataset", "toy", "--act", "relu", "--solver", "sgd", "--data-root", str(data_root),
            "--run-dir", str(tmp_path / "run"), "--iters", "10", *FAST, "base_lr=1e-50"]
    assert train_main(argv) == 2
    assert "base_lr must be positive" in one_error_line(capsys, "train")
    assert not (tmp_path / "run").exists()
    # beyond Caffe's 32-bit max_iter: one line, not protobuf's ValueError as the nets are written
    argv[argv.index("--iters") + 1] = "3000000000"
    assert train_main(argv[:-1]) == 2
    assert "does not fit Caffe's 32-bit solver fields (Value out of range: 3000000000)" in \
        one_error_line(capsys, "train")
    assert not (tmp_path / "run").exists()
