"""The grid on Slurm (tools/slurm/, docs/cluster.md), marked ``slurm``: against a
one-node cluster of our own (tools/slurm/local_cluster.sh, as `make slurm-up`) in a temporary folder
on free ports: a job array of two 20-iteration runs on a tiny data set and the evaluation job after
it, a run requeued mid-way that ends byte-identical to an uninterrupted one, and an unknown data set
refused before anything is submitted. As root (as CI runs) the cluster must start, apt-get
installing the packages when missing; without root those tests are skipped, with the reason, when
the packages are missing or the daemons cannot start. `make test-fast` leaves them out (-m "not
slow and not slurm"). What is submitted, without Slurm, is tested in tests/test_slurm_submit.py."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import DEFAULT, ROOT
from core.names import grid_runs
from data_prep.build import build_dataset
from tests.helpers import FAST, alive, clean_env, make, random_slices

SCRIPTS = ROOT / "tools" / "slurm"
CLUSTER = SCRIPTS / "local_cluster.sh"


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
    committed = (ROOT / "models" / "reference", ROOT / "models" / "long")  # make eval scores them

    def ignored(directory, names):
        weights = not any(Path(directory).is_relative_to(c) for c in committed)
        return [n for n in names if n in skip or (weights and n.endswith((".caffemodel", ".solverstate")))]

    shutil.copytree(ROOT, dest, symlinks=True, ignore=ignored)
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
