"""Nothing silent about a run directory (issue #23): a copied run is scored and continued as
itself; a snapshot is checked before --resume trusts it, and a bad one is refused with one line
naming the good one to fall back to; one trainer per run directory; --iters 0 and numbers out of
range are refused; a snapshot that the disk has no room for stops the run with one line and
leaves the last whole snapshot."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.config import DEFAULT, ROOT, ConfigError
from core.locks import lock_beside
from core.run_files import final_snapshot
from eval.__main__ import main as eval_main
from tests.helpers import FAST, eval_tables
from tests.test_train import run_cli, wait_for
from tools import snapshots
from tools.train import main as train_main

pytestmark = pytest.mark.slow


def args(data_root, run, iters, *extra):
    return ["--dataset", "toy", "--act", "rrelu", "--solver", "nesterov", "--iters", str(iters),
            "--data-root", str(data_root), "--run-dir", str(run), *extra, *FAST]


def weights(run):
    _, _, caffemodel = final_snapshot(run)
    return caffemodel.read_bytes()


def refused(capsys, main, argv, prog="train"):
    """The one line ``main(argv)`` prints when it refuses (exit 2), and nothing else."""
    capsys.readouterr()  # what earlier commands printed
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error:") and not captured.out.strip(), err
    return err[0]


@pytest.fixture
def hr_folder(data_root):
    return data_root / "toy" / "test_images"


# ------------------------------------------------------------------ 1. a copy is a copy

def test_a_copied_run_is_scored_as_itself(data_root, tmp_path, hr_folder, capsys):
    assert train_main(args(data_root, tmp_path / "orig", 10)) == 0
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")
    _, _, model = final_snapshot(tmp_path / "copy")
    assert model.parent.parent == tmp_path / "copy"
    model.write_bytes(b"corrupt")  # the copy's weights only
    line = refused(capsys, eval_main, ["--hr", str(hr_folder), "--runs", str(tmp_path / "copy"),
                                       *eval_tables(tmp_path, "refused")], "eval")
    assert "not a Caffe model" in line
    assert eval_main(["--hr", str(hr_folder), "--runs", str(tmp_path / "orig"), *eval_tables(tmp_path)]) == 0


def test_a_copied_interrupted_run_continues_in_the_copy_alone(data_root, tmp_path, capsys):
    assert train_main(args(data_root, tmp_path / "orig", 10)) == 0
    before = sorted(p.name for p in (tmp_path / "orig" / "snapshots").iterdir())
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")
    assert train_main(args(data_root, tmp_path / "copy", 30, "--resume")) == 0
    assert "written anew for this one" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "orig" / "snapshots").iterdir()) == before
    manifest = json.loads((tmp_path / "copy" / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["snapshots"][-1]["iter"] == 30
    assert (tmp_path / "copy" / manifest["snapshots"][-1]["caffemodel"]).is_file()
    assert train_main(args(data_root, tmp_path / "straight", 30)) == 0
    assert weights(tmp_path / "copy") == weights(tmp_path / "straight")


# ----------------------------------------------------------- 2. snapshots checked, whole

@pytest.mark.parametrize("damage,why", [
    ({"caffemodel": b""}, "empty"),
    ({"caffemodel": b"name: 'text, not a model'"}, "not a Caffe model"),
    ({"caffemodel": None}, "caffemodel not found"),
    ({"solverstate": b""}, "empty or not a solver state"),
    ({"solverstate": b"\xff\x00garbage" * 20}, "not a solver state"),
])
def test_a_bad_snapshot_is_refused_and_names_the_one_to_fall_back_to(data_root, tmp_path, capsys,
                                                                     damage, why):
    run = tmp_path / "run"
    assert train_main(args(data_root, run, 20)) == 0
    for kind, data in damage.items():
        path = run / "snapshots" / f"srcnn_iter_20.{kind}"
        path.unlink() if data is None else path.write_bytes(data)
    line = refused(capsys, train_main, args(data_root, run, 40, "--resume"))
    assert "snapshot of iteration 20 is unusable" in line and why in line
    assert "the last good snapshot is of iteration 10: add --resume-from 10" in line
    # falling back gives the run an uninterrupted one would have been
    assert train_main(args(data_root, run, 40, "--resume", "--resume-from", "10")) == 0
    assert train_main(args(data_root, tmp_path / "straight", 40)) == 0
    assert weights(run) == weights(tmp_path / "straight")
    tests = json.loads((run / "manifest.json").read_text())["tests"]
    assert [t["iter"] for t in tests] == [10, 20, 30, 40]


def test_a_snapshot_the_disk_has_no_room_for_stops_the_run_with_one_line(data_root, tmp_path, capsys,
                                                                        monkeypatch):
    run = tmp_path / "run"
    real = shutil.disk_usage
    calls = []

    def full_after_first(path):
        calls.append(path)
        usage = real(path)
        return usage._replace(free=usage.free if len(calls) == 1 else 1000)
    monkeypatch.setattr(snapshots.shutil, "disk_usage", full_after_first)
    capsys.readouterr()
    assert train_main(args(data_root, run, 30)) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert "no space left for a snapshot" in line and "its last snapshot is of iteration 10" in line
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "stopped" and [s["iter"] for s in manifest["snapshots"]] == [10]
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == [
        "srcnn_iter_10.caffemodel", "srcnn_iter_10.solverstate"]
    monkeypatch.setattr(snapshots.shutil, "disk_usage", real)
    assert train_main(args(data_root, run, 30, "--resume")) == 0  # once there is room


# ------------------------------------------------------------ 3. one trainer per run

def test_a_second_trainer_on_a_run_directory_is_refused_naming_the_first(data_root, tmp_path):
    run = tmp_path / "run"
    first = run_cli(args(data_root, run, 100000, "--resume"))
    try:
        wait_for(run / "manifest.json")
        second = run_cli(args(data_root, run, 100000, "--resume", "--seed", "1"))
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2
        errors = [line for line in err.splitlines() if line.startswith("train:")]  # a CUDA build logs too
        holder = re.search(r"is in use by pid (\d+) \(train --dataset toy", errors[0]) if len(errors) == 1 else None
        assert holder, errors
        # the first command's trainer: the child that its supervising process waits for (tools/supervisor.py)
        assert f"PPid:\t{first.pid}\n" in Path(f"/proc/{holder.group(1)}/status").read_text()
        assert first.poll() is None  # the first goes on, its directory untouched
        assert json.loads((run / "manifest.json").read_text())["seed"] == 0
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)


def test_a_lock_holder_keeps_trainers_out_and_its_death_frees_the_lock(data_root, tmp_path, capsys):
    """Held by another process (python -m core.locks, as make grid holds runs/): refused before
    anything is written; once the holder is killed, the kernel has released it."""
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-m", "core.locks", str(lock_beside(run)), "a test",
                               str(run), "--", "sleep", "60"], cwd=ROOT)
    try:
        deadline = time.time() + 30
        while not lock_beside(run).exists() or not lock_beside(run).read_text():
            assert time.time() < deadline
            time.sleep(0.01)
        line = refused(capsys, train_main, args(data_root, run, 10))
        assert f"is in use by pid {holder.pid} (a test)" in line and not run.exists()
    finally:
        holder.kill()
        holder.wait()
    assert train_main(args(data_root, run, 10)) == 0


# ---------------------------------------------------------- 4. numbers out of range

def test_iters_zero_is_refused_not_the_default(data_root, tmp_path, capsys):
    for iters in ("0", "-5"):
        line = refused(capsys, train_main, args(data_root, tmp_path / "run", iters))
        assert f"--iters must be positive, got {iters}" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override,message", [
    ("base_lr=-1e-4", "base_lr must be positive"),
    ("base_lr=nan", "base_lr must be finite"),
    ("base_lr=inf", "base_lr must be finite"),
    ("momentum=1.5", "momentum must be below 1"),
    ("lr_mult_weights=1,-1,0.1", "lr_mult_weights must be >= 0"),
    ("random_seed=-1", "random_seed must be >= 0"),
])
def test_numbers_out_of_range_are_one_line(data_root, tmp_path, capsys, override, message):
    assert message in refused(capsys, train_main, args(data_root, tmp_path / "run", 10, override))


def test_every_number_in_the_config_and_in_a_solver_file_has_a_range():
    """A new numeric key, or a numeric field a solver file may set (core.solvers), must say whether
    it may be 0 (core.config POSITIVE / NON_NEGATIVE): the two are checked by the same lists."""
    from core.config import FIELDS, NON_NEGATIVE, POSITIVE
    from core.solvers import NUMERIC_FIELDS
    numeric = {k for k, kind in FIELDS.items() if kind is not bool and kind is not str}
    # 1 <= rrelu_lower <= rrelu_upper, in validate(); clip_gradients: not 0 (check_number)
    checked_apart = {"rrelu_lower", "rrelu_upper", "clip_gradients"}
    assert numeric | set(NUMERIC_FIELDS) == set(POSITIVE) | set(NON_NEGATIVE) | checked_apart
    assert not set(POSITIVE) & set(NON_NEGATIVE)
    with pytest.raises(ConfigError):
        DEFAULT.with_overrides(["rrelu_lower=nan"])
    assert np.isfinite(DEFAULT.base_lr)


# ------------------------------------------------ 5. a trainer's death (issue #32, case 5)

def broken_data(data_root, folder, good_passes):
    """A copy of the toy data set whose training list reaches, after ``good_passes`` passes over
    its good file (10: past the snapshot of iteration 10; 0: at once), a file that is not HDF5:
    Caffe's HDF5Data layer aborts the process there (LOG(FATAL), SIGABRT). Returns (data root,
    the good list's text: writing it back mends the data set)."""
    toy = folder / "toy"
    shutil.copytree(data_root / "toy", toy)
    (toy / "test.txt").write_text(f"{toy / 'test_000.h5'}\n")
    (toy / "broken.h5").write_text("not HDF5\n")
    good = f"{toy / 'train_000.h5'}\n" * max(good_passes, 1)
    (toy / "train.txt").write_text(good * (good_passes > 0) + f"{toy / 'broken.h5'}\n")
    return folder, good


def trainer(argv, **kwargs):
    """``python -m tools.train ARGV`` run to its end, as make train runs it."""
    return subprocess.run([sys.executable, "-m", "tools.train", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, GLOG_minloglevel="2"), **kwargs)


def test_a_caffe_abort_marks_the_run_failed_and_the_same_command_resumes_it(data_root, tmp_path):
    root, good = broken_data(data_root, tmp_path / "data", good_passes=10)
    run = tmp_path / "run"
    argv = args(root, run, 40)  # as make train: neither --resume nor --force
    first = trainer(argv)
    assert first.returncode == 1, first.stderr[-2000:]
    last = first.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"train: error: the trainer died after iteration 10 \(Caffe aborted: Failed opening "
                        rf"HDF5 file: {re.escape(str(root / 'toy' / 'broken.h5'))} \(hdf5_data_layer\.cpp:\d+\)\); "
                        rf"{re.escape(str(run))} is marked failed: the same command again resumes it from "
                        rf"its last snapshot or starts it over", last), last
    assert "Check failure stack trace" not in first.stderr and "Traceback" not in first.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed" and [s["iter"] for s in manifest["snapshots"]] == [10]
    assert "Failed opening HDF5 file" in manifest["failures"][-1]["reason"]

    (root / "toy" / "train.txt").write_text(good)  # the data mended; the same command again
    again = trainer(argv)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (f"train: {run} failed after iteration 10 (Caffe aborted: Failed opening HDF5 file" in again.stdout
            and "resuming it from its snapshot of iteration 10" in again.stdout), again.stdout
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["iterations_done"] == 40
    assert [t["iter"] for t in manifest["tests"]] == [10, 20, 30, 40]


def test_a_run_that_failed_before_its_first_snapshot_starts_over(data_root, tmp_path):
    root, good = broken_data(data_root, tmp_path / "data", good_passes=0)
    run = tmp_path / "run"
    first = trainer(args(root, run, 20, "--resume"))  # as make grid runs it
    assert first.returncode == 1 and "the trainer died after iteration 0 (Caffe aborted" in first.stderr
    assert json.loads((run / "manifest.json").read_text())["status"] == "failed"
    (root / "toy" / "train.txt").write_text(good)
    again = trainer(args(root, run, 20, "--resume"))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "failed after iteration 0" in again.stdout and "starting it over (it has no snapshot)" in again.stdout
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done" and "failures" not in manifest  # a new run


def test_a_failed_run_with_another_config_starts_over_without_force(data_root, tmp_path, capsys):
    """A run the trainer left failed cannot be finished as it was: a rerun with a changed config (the
    user's fix) starts it over, with neither --force nor --resume (make train passes neither)."""
    run = tmp_path / "run"
    assert train_main(args(data_root, run, 10)) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["status"] = "failed"
    manifest["failures"] = [{"iter": 10, "reason": "Caffe aborted: a test's", "time": "then"}]
    (run / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert train_main(args(data_root, run, 20, "base_lr=2e-4")) == 0
    out = capsys.readouterr().out
    assert f"train: {run} failed after iteration 10 (Caffe aborted: a test's): starting it over (it was " \
           "trained with another config)" in out
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["config"]["base_lr"] == 2e-4


def wait_for_a_recorded_snapshot(run, timeout=120):
    """Until the run's manifest lists a snapshot (written after the snapshot's files)."""
    deadline = time.time() + timeout
    while not (json.loads((run / "manifest.json").read_text()) if (run / "manifest.json").exists()
               else {}).get("snapshots"):
        assert time.time() < deadline, f"{run} recorded no snapshot"
        time.sleep(0.01)


def trainer_pid(run):
    """The pid that holds the run's lock: the trainer (the child of the command's process)."""
    deadline = time.time() + 60
    while not re.match(r"pid \d+", text := lock_beside(run).read_text() if lock_beside(run).exists() else ""):
        assert time.time() < deadline
        time.sleep(0.01)
    return int(text.split()[1])


def test_a_trainer_killed_by_a_signal_leaves_its_run_failed_and_resumable(data_root, tmp_path):
    run = tmp_path / "run"
    command = run_cli(args(data_root, run, 100000))
    wait_for_a_recorded_snapshot(run)
    os.kill(trainer_pid(run), signal.SIGKILL)  # as the out-of-memory killer does
    _, err = command.communicate(timeout=120)
    assert command.returncode == 1
    assert re.search(r"train: error: the trainer died after iteration \d+ \(killed by SIGKILL\); "
                     rf"{re.escape(str(run))} is marked failed", err.strip().splitlines()[-1]), err[-2000:]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["failures"][-1]["reason"] == "killed by SIGKILL"
    again = trainer(args(data_root, run, manifest["snapshots"][-1]["iter"] + 10))
    assert again.returncode == 0 and "(killed by SIGKILL): resuming it from its snapshot" in again.stdout


def test_a_run_left_running_by_a_dead_trainer_is_taken_up_by_the_next(data_root, tmp_path):
    """Trainer and its supervising process killed together (the machine stops): the manifest says
    running, and no process holds the run's lock; the same command resumes it and says why."""
    run = tmp_path / "run"
    command = run_cli(args(data_root, run, 100000), start_new_session=True)
    wait_for_a_recorded_snapshot(run)
    os.killpg(command.pid, signal.SIGKILL)
    command.communicate(timeout=120)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "running"
    last = manifest["snapshots"][-1]["iter"]
    again = trainer(args(data_root, run, last + 10))
    assert again.returncode == 0, again.stderr[-2000:]
    assert (f"(its trainer stopped without a word: killed, or the machine went down): resuming it "
            f"from its snapshot of iteration {last}") in again.stdout
    assert json.loads((run / "manifest.json").read_text())["status"] == "done"


def test_a_caffe_abort_while_a_stopped_run_is_taken_up_marks_it_failed(data_root, tmp_path, capsys):
    """The abort comes as Caffe builds the resumed run's net (the data's first file is not HDF5),
    before the trainer wrote a word: the run was "interrupted", and says failed now."""
    root, good = broken_data(data_root, tmp_path / "data", good_passes=0)
    (root / "toy" / "train.txt").write_text(good)
    run = tmp_path / "run"
    assert train_main(args(root, run, 10)) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    (root / "toy" / "train.txt").write_text(f"{root / 'toy' / 'broken.h5'}\n")
    first = trainer(args(root, run, 20, "--resume"))
    assert first.returncode == 1 and "(Caffe aborted: Failed opening HDF5 file" in first.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed" and [s["iter"] for s in manifest["snapshots"]] == [10]
    (root / "toy" / "train.txt").write_text(good)
    again = trainer(args(root, run, 20))
    assert again.returncode == 0 and "resuming it from its snapshot of iteration 10" in again.stdout
