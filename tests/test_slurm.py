"""The grid on Slurm (tools/slurm/, README "Running on a cluster"): what `make grid SCHEDULER=slurm`
submits, the batch script's signal handling and `make grid-status`, without Slurm; then, marked
``slurm``, against a one-node cluster of our own (tools/slurm/local_cluster.sh, as `make slurm-up`)
in a temporary folder on free ports: a job array of two 20-iteration runs on a tiny data set and
the evaluation job after it, a run requeued mid-way that ends byte-identical to an uninterrupted
one, and an unknown data set refused before anything is submitted. As root (as CI runs) the cluster
must start, apt-get installing the packages when missing; without root those tests are skipped,
with the reason, when the packages are missing or the daemons cannot start. `make test-fast` leaves
them out (-m "not slow and not slurm")."""
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import DEFAULT, ROOT
from core.names import grid_runs
from data_prep.build import build_dataset
from tests.helpers import FAST, random_slices
from tools.slurm import status, submit

SCRIPTS = ROOT / "tools" / "slurm"
CLUSTER = SCRIPTS / "local_cluster.sh"


def sbatch_lines(script):
    return [ln.split(None, 1)[1].strip() for ln in (SCRIPTS / script).read_text().splitlines()
            if ln.startswith("#SBATCH")]


def clean_env(**extra):
    """This environment without a calling make's, a Slurm job's or a site's variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "MAKE")) and k != "MFLAGS"}
    return dict(env, GLOG_minloglevel="2", **extra)


def make(*args, cwd=ROOT, env=None, timeout=120):
    return subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout)


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
    assert array[script + 10:] == ["max_iter=200", "solver_mode=GPU"]
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


# Against a local one-node cluster ----------------------------------------------------------------

def free_port_pair():
    """A port P with P and P+1 free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65000:
            try:
                with socket.socket() as a, socket.socket() as b:
                    a.bind(("127.0.0.1", port))
                    b.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    pytest.fail("no two consecutive free ports")


def cluster_pids(folder):
    pids = {}
    for name in ("munged", "slurmctld", "slurmd"):
        f = folder / "run" / f"{name}.pid"
        if f.exists():
            pids[name] = int(f.read_text().strip())
    return pids


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node Slurm cluster in its own folder and ports; stopped (and checked) afterwards.
    As root (CI) it must start, installing the packages if missing; without root it is skipped,
    with the reason, when the packages are missing or the daemons cannot start."""
    root = os.geteuid() == 0
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(b) is None
               and not Path("/usr/sbin", b).exists()]
    if missing and not root:
        pytest.skip(f"Slurm tests need root to install Slurm and munge ({', '.join(missing)} missing)")
    folder = tmp_path_factory.mktemp("slurm")
    port = free_port_pair()
    up = subprocess.run(["bash", CLUSTER, "up", "--dir", folder, "--port", str(port)],
                        capture_output=True, text=True, env=clean_env(), timeout=600)
    pids = cluster_pids(folder)
    try:
        if up.returncode != 0 and not root:
            pytest.skip(f"the local Slurm cluster cannot start without root: {up.stderr.strip()}")
        assert up.returncode == 0, f"local cluster did not start:\n{up.stdout}{up.stderr}"
        conf = str(folder / "etc" / "slurm.conf")
        assert f"export SLURM_CONF={conf}" in up.stdout
        yield {"dir": folder, "port": port, "env": clean_env(SLURM_CONF=conf)}
    finally:
        down = subprocess.run(["bash", CLUSTER, "down", "--dir", folder], capture_output=True,
                              text=True, env=clean_env(), timeout=180)
        left = {n: p for n, p in pids.items() if alive(p)}
        assert down.returncode == 0 and not left, f"left running: {left}\n{down.stdout}{down.stderr}"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A copy of the working tree (the same .venv) whose data/prostate is a tiny data set: runs,
    logs, results and REPORT.md of the Slurm tests land in it, not in this repository."""
    dest = tmp_path_factory.mktemp("repo") / "medsr"
    skip = {".git", ".venv", "data", "runs", "results", "figures", "logs", ".slurm", "bench",
            "__pycache__", ".pytest_cache", "REPORT.md"}
    shutil.copytree(ROOT, dest, symlinks=True, ignore=lambda d, names: [
        n for n in names if n in skip or n.endswith((".caffemodel", ".solverstate"))])
    (dest / ".venv").symlink_to(ROOT / ".venv")
    build_dataset(dest / "data" / "prostate", random_slices(3), random_slices(2, seed=7), DEFAULT,
                  {"sources": []})
    return dest


def slurm(cluster, *args, check=True):
    proc = subprocess.run(list(args), capture_output=True, text=True, env=cluster["env"], timeout=60)
    assert proc.returncode == 0 or not check, f"{args}: {proc.stderr}"
    return proc.stdout


def job_state(cluster, job):
    """{"A_i" or "J": state} of a job (array) squeue still lists."""
    out = slurm(cluster, "squeue", "-h", "-r", "-t", "all", "-j", job, "-o", "%i %T", check=False)
    return dict(line.split() for line in out.splitlines() if line.strip())


FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}


def wait_done(cluster, job, timeout=300, logs=()):
    deadline = time.time() + timeout
    while True:
        states = job_state(cluster, job)
        if states and set(states.values()) <= FINAL:
            return states
        if time.time() > deadline:
            tails = "\n".join(f"--- {p}\n{Path(p).read_text(errors='replace')[-1500:]}"
                              for p in logs if Path(p).exists())
            pytest.fail(f"job {job} not finished after {timeout} s: {states}\n{tails}")
        time.sleep(0.5)


def job_times(cluster, job):
    """[(StartTime, EndTime)] of a job or of every task of an array, as ISO strings."""
    out = slurm(cluster, "scontrol", "-o", "show", "job", job)
    return re.findall(r"StartTime=(\S+) .*?EndTime=(\S+)", out)


@pytest.mark.slurm
def test_the_local_cluster_is_idempotent_and_names_a_taken_port(cluster, tmp_path):
    again = subprocess.run(["bash", CLUSTER, "up", "--dir", cluster["dir"], "--port", str(cluster["port"])],
                           capture_output=True, text=True, env=clean_env(), timeout=60)
    assert again.returncode == 0 and "already up" in again.stdout
    other = subprocess.run(["bash", CLUSTER, "up", "--dir", tmp_path / "other", "--port", str(cluster["port"])],
                           capture_output=True, text=True, env=clean_env(), timeout=60)
    assert other.returncode == 1 and f"port {cluster['port']} (slurmctld) is taken" in other.stderr
    assert not cluster_pids(tmp_path / "other")


@pytest.mark.slurm
def test_grid_array_finishes_then_the_evaluation_job_writes_the_report(cluster, repo):
    overrides = ["max_iter=20", *FAST]
    proc = make("grid", "SCHEDULER=slurm", "DATASETS=prostate", "ITERS=20", f"SET={' '.join(FAST)}",
                cwd=repo, env=cluster["env"])
    assert proc.returncode == 0, proc.stderr
    array = re.search(r"job array (\d+): 2 runs", proc.stdout).group(1)
    evaluation = re.search(r"evaluation job (\d+)", proc.stdout).group(1)
    logs = [repo / "logs" / "slurm" / f"grid-{array}_{i}.out" for i in (0, 1)]
    eval_log = repo / "logs" / "slurm" / f"eval-{evaluation}.out"
    assert wait_done(cluster, evaluation, logs=[*logs, eval_log]) == {evaluation: "COMPLETED"}, \
        eval_log.read_text(errors="replace")[-2000:]
    assert wait_done(cluster, array) == {f"{array}_0": "COMPLETED", f"{array}_1": "COMPLETED"}
    for run in grid_runs("paper", ["prostate"]):
        dataset, act, solver, seed = run.split("-")
        m = json.loads((repo / "runs" / dataset / f"{act}_{solver}" / f"seed{seed}" / "manifest.json").read_text())
        assert m["status"] == "done" and m["iterations_done"] == 20, run
    ends = [end for _, end in job_times(cluster, array)]
    (start, _), = job_times(cluster, evaluation)
    assert len(ends) == 2 and start >= max(ends)
    report = (repo / "REPORT.md").read_text()
    assert "make grid SCHEDULER=slurm GRID=paper SEEDS=1 DATASETS=prostate PROFILE=short ITERS=20" in report
    shown = make("grid-status", cwd=repo, env=cluster["env"])
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"{array}_0\s+prostate-rrelu-nesterov-0\s+finished\s+iteration 20 of 20", shown.stdout)
    assert re.search(rf"{evaluation}\s+evaluation\s+finished", shown.stdout), shown.stdout

    # A task whose run is finished exits at once.
    again = subprocess.run(["sbatch", "--wait", "--parsable", "--array=0", f"--chdir={repo}",
                            f"--output={repo}/logs/slurm/again-%A_%a.out", SCRIPTS / "grid.sbatch",
                            "prostate-relu-sgd-0", "--", *overrides], env=cluster["env"],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    out = (repo / "logs" / "slurm" / f"again-{again.stdout.strip()}_0.out").read_text()
    assert "is finished (20 iterations); nothing to do" in out


@pytest.mark.slurm
def test_a_run_requeued_midway_ends_byte_identical_to_an_uninterrupted_one(cluster, repo, tmp_path):
    iters, run = 2000, "prostate-rrelu-nesterov-1"
    overrides = [f"max_iter={iters}", "batch_train=16", "n1=8", "n2=4", "test_interval=100", "snapshot=100"]
    # The uninterrupted run, beside the cluster; it also writes seed 1's patch order first.
    straight = subprocess.Popen([sys.executable, "-m", "tools.train", "--dataset", "prostate", "--act",
                                 "rrelu", "--solver", "nesterov", "--seed", "1", "--run-dir",
                                 tmp_path / "straight", *overrides], cwd=repo, env=clean_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = repo / "runs" / "prostate" / "rrelu_nesterov" / "seed1"
    deadline = time.time() + 120
    while not (tmp_path / "straight" / "manifest.json").exists():
        assert time.time() < deadline and straight.poll() is None, straight.communicate()[1]
        time.sleep(0.05)
    log = repo / "logs" / "slurm" / "requeue.out"
    job = slurm(cluster, "sbatch", "--parsable", "--array=0", f"--chdir={repo}", f"--output={log}",
                SCRIPTS / "grid.sbatch", run, "--", *overrides).strip()
    while not (run_dir / "snapshots" / "srcnn_iter_100.caffemodel").exists():
        assert time.time() < deadline, log.read_text(errors="replace")
        time.sleep(0.05)
    slurm(cluster, "scontrol", "requeue", f"{job}_0")
    # Slurm holds a requeued job for 2 minutes (BeginTime): release it while it is pending.
    while (state := job_state(cluster, job).get(f"{job}_0")) not in {"RUNNING", *FINAL}:
        assert time.time() < deadline, state
        if state == "PENDING":
            slurm(cluster, "scontrol", "update", f"jobid={job}_0", "StartTime=now", check=False)
        time.sleep(0.5)
    assert wait_done(cluster, job, logs=[log]) == {f"{job}_0": "COMPLETED"}
    assert straight.wait(timeout=300) == 0, straight.stderr.read()

    text = log.read_text(errors="replace")
    stopped = re.search(r"train: SIGTERM at iteration (\d+)", text)
    assert stopped and 100 <= int(stopped.group(1)) < iters, text[-2000:]
    assert "start 1," in text and "start 2," in text and "trainer exit 0" in text
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "done" and [t["iter"] for t in manifest["tests"]] == list(range(100, iters + 1, 100))
    final = f"snapshots/srcnn_iter_{iters}"
    assert (run_dir / f"{final}.caffemodel").read_bytes() == (tmp_path / "straight" / f"{final}.caffemodel").read_bytes()
    from caffe.proto import caffe_pb2
    states = []
    for d in (run_dir, tmp_path / "straight"):
        state = caffe_pb2.SolverState.FromString((d / f"{final}.solverstate").read_bytes())
        assert Path(state.learned_net) == d / f"{final}.caffemodel"
        state.learned_net = ""  # the only difference: each names its own .caffemodel
        states.append(state.SerializeToString())
    assert states[0] == states[1]


@pytest.mark.slurm
def test_an_unknown_data_set_is_refused_before_anything_is_submitted(cluster, repo):
    before = slurm(cluster, "squeue", "-h", "-t", "all", "-o", "%F")
    records = sorted((repo / "logs" / "slurm").glob("grid-*.json")) if (repo / "logs").exists() else []
    proc = make("grid", "SCHEDULER=slurm", "DATASETS=prostate liver", cwd=repo, env=cluster["env"])
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[0].startswith("names: error: unknown data set 'liver'")
    assert slurm(cluster, "squeue", "-h", "-t", "all", "-o", "%F") == before
    assert (sorted((repo / "logs" / "slurm").glob("grid-*.json")) if (repo / "logs").exists() else []) == records
