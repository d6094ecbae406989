"""The grid on Slurm (tools/slurm/, docs/cluster.md) without Slurm: what `make grid
SCHEDULER=slurm` submits, the batch script's signal handling and `make grid-status`. The tests
against a cluster of our own are in tests/test_slurm_cluster.py."""
import json
import os
import re
import shlex
import signal
import subprocess
import time

import pytest

from core.config import ROOT
from core.names import grid_runs
from tests.helpers import make
from tools.slurm import status, submit

SCRIPTS = ROOT / "tools" / "slurm"


def sbatch_lines(script):
    return [ln.split(None, 1)[1].strip() for ln in (SCRIPTS / script).read_text().splitlines()
            if ln.startswith("#SBATCH")]


# Without Slurm -----------------------------------------------------------------------------------

def test_batch_scripts_ask_for_a_run_and_leave_site_settings_out():
    grid = sbatch_lines("grid.sbatch")
    for wanted in ("--requeue", "--open-mode=append", "--cpus-per-task=1", "--mem=4G"):
        assert wanted in grid
    assert any(re.fullmatch(r"--signal=B:USR1@\d+", o) for o in grid)
    for script in ("grid.sbatch", "eval.sbatch"):
        options = " ".join(sbatch_lines(script))
        for site in ("--partition", "--account", "--time", "--qos", "-p ", "-A ", "-t "):
            assert site not in options, (script, site)
        assert subprocess.run(["bash", "-n", SCRIPTS / script]).returncode == 0


def test_dry_run_shows_one_array_of_the_grid_and_an_evaluation_after_it():
    proc = make("grid", "SCHEDULER=slurm", "DRY_RUN=1", "GRID=full", "SEEDS=2", "DATASETS=prostate",
                "ITERS=200", "SET=solver_mode=GPU", "SBATCH_ARGS=--partition=gpu --time=2:00:00")
    assert proc.returncode == 0, proc.stderr
    array, evaluation = [shlex.split(ln) for ln in proc.stdout.splitlines() if ln.startswith("sbatch ")]
    runs = grid_runs("full", ["prostate"], seeds=2)
    assert len(runs) == 8 and "--array=0-7" in array and "--gres=gpu:1" in array
    script = array.index(str(SCRIPTS / "grid.sbatch"))
    assert array[script + 1:script + 9] == runs and array[script + 9] == "--"
    # The Makefile's LAYERS first (the trainer resolves auto on the node: separate on a GPU).
    assert array[script + 10:] == ["act_layer=auto", "max_iter=200", "solver_mode=GPU"]
    for cmd in (array, evaluation):
        assert {"--partition=gpu", "--time=2:00:00"} <= set(cmd)
    assert "--dependency=afterok:<array job id>" in evaluation and "--gres=gpu:1" not in evaluation
    assert evaluation[-2:] == ["make grid SCHEDULER=slurm GRID=full SEEDS=2 DATASETS=prostate "
                               "PROFILE=short ITERS=200 SET=solver_mode=GPU", "prostate"]
    cpu = make("grid", "SCHEDULER=slurm", "DRY_RUN=1", "DATASETS=prostate")
    assert cpu.returncode == 0 and "--gres" not in cpu.stdout and "--array=0-1" in cpu.stdout


@pytest.mark.parametrize("bad, message", [("DATASETS=prostate liver", "unknown data set 'liver'"),
                                          ("SET=nokey=1", "unknown config key 'nokey'"),
                                          ("GRID=huge", "unknown grid 'huge'")])
def test_bad_names_are_refused_before_any_sbatch(bad, message):
    proc = make("grid", "SCHEDULER=slurm", "DRY_RUN=1", bad)
    assert proc.returncode != 0 and message in proc.stderr
    assert "sbatch" not in proc.stdout


def test_an_unknown_scheduler_is_one_line():
    proc = make("-n", "grid", "SCHEDULER=pbs")
    assert proc.returncode != 0 and "SCHEDULER=pbs: choose local" in proc.stderr


FAKE_TRAINER = """#!/bin/bash
echo "$@" > args
trap 'echo TERM > signalled; exit 143' TERM
touch started
while :; do sleep 0.05; done
"""
FAKE_SCONTROL = """#!/bin/bash
echo "$@" >> "$FAKE_LOG"
"""


@pytest.mark.parametrize("sig, requeued", [(signal.SIGUSR1, True), (signal.SIGTERM, False)],
                         ids=["USR1", "TERM"])
def test_batch_script_stops_the_trainer_and_requeues_near_the_time_limit(tmp_path, sig, requeued):
    """USR1 (--signal, before the time limit): the trainer gets SIGTERM and the task requeues itself;
    SIGTERM (preemption, scancel, scontrol requeue): the trainer gets it, Slurm does the rest."""
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / "bin").mkdir()
    for path, text in ((tmp_path / ".venv" / "bin" / "python", FAKE_TRAINER),
                       (tmp_path / "bin" / "scontrol", FAKE_SCONTROL)):
        path.write_text(text)
        path.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", SLURM_ARRAY_TASK_ID="1",
               SLURM_JOB_ID="77", SLURM_ARRAY_JOB_ID="76", FAKE_LOG=str(tmp_path / "scontrol.log"))
    proc = subprocess.Popen(["bash", SCRIPTS / "grid.sbatch", "prostate-rrelu-nesterov-0",
                             "prostate-relu-sgd-3", "--", "max_iter=5"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 20
    while not (tmp_path / "started").exists():
        assert time.time() < deadline and proc.poll() is None, proc.stdout.read()
        time.sleep(0.02)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=20)
    assert (tmp_path / "args").read_text().split() == [
        "-m", "tools.train", "--resume", "--dataset", "prostate", "--act", "relu", "--solver", "sgd",
        "--seed", "3", "max_iter=5"]
    assert (tmp_path / "signalled").read_text().strip() == "TERM", out
    if requeued:
        assert proc.returncode == 0 and (tmp_path / "scontrol.log").read_text().split() == ["requeue", "77"]
        assert "requeueing task 77" in out
    else:
        assert proc.returncode == 143 and not (tmp_path / "scontrol.log").exists(), out


def test_batch_script_refuses_a_task_without_a_run(tmp_path):
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="2")
    proc = subprocess.run(["bash", SCRIPTS / "grid.sbatch", "prostate-relu-sgd-0", "--"], cwd=tmp_path,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "task '2' has no run" in proc.stderr


def test_status_states_from_queue_manifest_and_log(tmp_path):
    log = tmp_path / "task.out"
    log.write_text("start\nprogress 1%\rprogress 50%\rtrain: error: no data set 'prostate'\n"
                   "grid.sbatch: 2026-01-01T00:00:00+00:00 prostate-relu-sgd-0: trainer exit 2\n")
    running = {"status": "running", "iterations_done": 120, "config": {"max_iter": 200},
               "tests": [{"iter": 100, "psnr": 31.234}]}
    done = dict(running, status="done", iterations_done=200, tests=[{"iter": 200, "psnr": 32.5}])
    state = status.run_state
    assert state(("PENDING", "Resources"), None, log) == ("pending", "(Resources)")
    assert state(("PENDING", "BeginTime"), running, log) == ("pending", "(BeginTime) resumes from iteration 120")
    assert state(("RUNNING", "None"), running, log) == (
        "running", "iteration 120 of 200, test PSNR 31.23 dB at 100")
    assert state(("RUNNING", "None"), None, log) == ("running", "starting")
    assert state(("COMPLETED", "None"), done, log) == ("finished", "iteration 200 of 200, test PSNR 32.50 dB at 200")
    assert state(None, done, log)[0] == "finished"  # squeue has forgotten the job (or is not there)
    assert state(None, done, log, target=400)[0] == "failed"  # submitted for more iterations
    assert state(None, done, tmp_path / "missing.out", target=400) == (
        "not started", "not in the queue, no log; the run is at iteration 200")
    assert state(("FAILED", "NonZeroExitCode"), None, log) == (
        "failed", "FAILED: train: error: no data set 'prostate'")
    assert state(None, running, log) == ("failed", "train: error: no data set 'prostate'")
    assert state(None, None, tmp_path / "missing.out")[0] == "not started"


def test_runs_an_earlier_array_still_trains_are_not_submitted_twice(tmp_path, monkeypatch, capsys):
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "squeue"
    fake.write_text("#!/bin/bash\necho '12_1 RUNNING'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    (tmp_path / "latest.json").write_text(json.dumps(
        {"array_job": "12", "runs": ["prostate-rrelu-nesterov-0", "prostate-relu-sgd-0"]}))
    assert submit.main(["--datasets", "prostate", "--logs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "job array 12 still has 1 of these runs queued or running (prostate-relu-sgd-0)" in err
    assert not list(tmp_path.glob("grid-*.json"))


def test_grid_status_without_a_submission_says_so(tmp_path):
    proc = make("grid-status", f"SLURM_LOGS={tmp_path}")
    assert proc.returncode != 0 and "no Slurm submission recorded" in proc.stderr
