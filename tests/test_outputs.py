"""Where outputs go wrong (issue #23): a read-only place, a full disk, a folder where a file is
meant, a SIGTERM mid-way, a second writer, a file name with shell in it. Each is one line, and
nothing partial is left that would block a rerun. The file systems are small tmpfs mounts (root
only: skipped, with the reason, where mounting is not allowed)."""
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.config import ROOT
from core.locks import lock_beside
from data_prep.__main__ import main as data_prep_main
from eval.__main__ import main as eval_main
from inference.upscale import main as upscale_main
from tests.helpers import FAST, make_run, rng_image, scorable_run, write_dicom, write_nifti
from tools.train import main as train_main

pytestmark = pytest.mark.slow


@contextmanager
def small_fs(folder, kilobytes, read_only=False):
    """A tmpfs of ``kilobytes`` mounted on ``folder`` while inside (read-only if asked)."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={kilobytes}k" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root only): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def one_error_line(capsys, prog):
    """The error line, which comes last and alone (a progress bar may stand above it)."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and err[-1] == errors[0] and errors[0].startswith(f"{prog}: error:"), err
    return errors[0]


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "in.png"
    cv2.imwrite(str(path), rng_image((300, 260), 256, np.uint8))
    return path


# ------------------------------------------------------------------------- inference.upscale

def test_upscale_to_a_read_only_place_is_one_line_before_any_work(model, picture, tmp_path, capsys):
    with small_fs(tmp_path / "ro", 64, read_only=True) as ro:
        argv = ["--in", str(picture), "--out", str(ro / "out.png"), "--model", str(model[1]),
                "--deploy", str(model[0])]
        started = time.time()
        assert upscale_main(argv) == 2
        assert "read-only file system" in one_error_line(capsys, "upscale")
        assert time.time() - started < 5 and os.listdir(ro) == []


def test_upscale_onto_a_full_disk_is_one_line_naming_the_output_and_leaves_nothing(model, picture, tmp_path,
                                                                                   capsys):
    """Issue #32: the line said "cannot write a file": a write() that finds the disk full names none."""
    with small_fs(tmp_path / "small", 48) as small:
        argv = ["--in", str(picture), "--out", str(small / "out.png"), "--model", str(model[1]),
                "--deploy", str(model[0])]
        assert upscale_main(argv) == 1
        line = one_error_line(capsys, "upscale")
        assert line == f"upscale: error: cannot write {small / 'out.png'}: No space left on device; " \
                       "no output was written", line
        assert os.listdir(small) == []


def test_a_train_val_net_as_deploy_is_one_line(model, picture, tmp_path, capsys, data_root):
    assert train_main(["--dataset", "toy", "--act", "relu", "--solver", "sgd", "--iters", "10",
                       "--data-root", str(data_root), "--run-dir", str(tmp_path / "run"), *FAST]) == 0
    capsys.readouterr()
    argv = ["--in", str(picture), "--out", str(tmp_path / "out.png"), "--deploy",
            str(tmp_path / "run" / "train_val.prototxt"),
            "--model", str(tmp_path / "run" / "snapshots" / "srcnn_iter_10.caffemodel")]
    assert upscale_main(argv) == 2
    assert "not a deploy net" in one_error_line(capsys, "upscale")


def sigterm_once(command, tmp_entries, cwd=ROOT, timeout=120, signum=signal.SIGTERM):
    """Start ``command``, SIGTERM it (or ``signum``) once ``tmp_entries()`` lists a temporary,
    return its result."""
    env = dict(os.environ, GLOG_minloglevel="2")
    child = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.time() + timeout
    while not tmp_entries():
        assert child.poll() is None, child.communicate()
        assert time.time() < deadline, "no temporary ever appeared"
        time.sleep(0.005)
    # frozen first, so that a loaded machine cannot let it finish between the look and the signal;
    # the SIGTERM is delivered as it continues, before it runs another line
    child.send_signal(signal.SIGSTOP)
    assert child.poll() is None and tmp_entries(), "it finished before the signal: give it more work"
    child.send_signal(signum)
    child.send_signal(signal.SIGCONT)
    out, err = child.communicate(timeout=timeout)
    return child.returncode, err


def test_sigterm_during_a_series_upscale_leaves_no_temporaries(model, tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    for i in range(60):
        write_dicom(series / f"{i:03d}.dcm", rng_image((128, 128), 4000, np.uint16, seed=i), instance=i + 1)
    out = tmp_path / "out"
    code, err = sigterm_once([sys.executable, "-m", "inference.upscale", "--in", str(series), "--out", str(out),
                              "--model", str(model[1]), "--deploy", str(model[0])],
                             lambda: [p for p in tmp_path.iterdir() if p.name.startswith(".")])
    assert code == 130 and "interrupted; no output was written" in err, (code, err[-500:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]


def test_a_series_upscale_killed_outright_leaves_a_temporary_the_next_run_removes(model, tmp_path):
    """Issue #32: SIGKILL cannot be caught, so its temporary stays; a later run of the same --out
    removed none. The next write of that name removes those of processes that are gone."""
    series = tmp_path / "series"
    series.mkdir()
    for i in range(60):
        write_dicom(series / f"{i:03d}.dcm", rng_image((128, 128), 4000, np.uint16, seed=i), instance=i + 1)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "inference.upscale", "--in", str(series), "--out", str(out),
               "--model", str(model[1]), "--deploy", str(model[0])]
    code, _ = sigterm_once(command, lambda: [p for p in tmp_path.iterdir() if p.name.startswith(".")],
                           signum=signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # left behind
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "series"]


# ---------------------------------------------------------------------------- data_prep

@pytest.fixture
def volume(tmp_path):
    data = np.random.RandomState(0).randint(0, 255, (80, 80, 40)).astype(np.uint8)
    return write_nifti(tmp_path / "vol.nii.gz", data)


def test_data_prep_out_that_is_a_file_or_read_only_is_one_line(volume, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert data_prep_main(["--input", str(volume), "--name", "v", "--out", str(tmp_path / "afile")]) == 2
    assert "--out is a file" in one_error_line(capsys, "data_prep")
    with small_fs(tmp_path / "ro", 64, read_only=True) as ro:
        assert data_prep_main(["--input", str(volume), "--name", "v", "--out", str(ro)]) == 2
        assert "read-only file system" in one_error_line(capsys, "data_prep")


def test_data_prep_onto_a_full_disk_is_one_line_and_leaves_nothing(volume, tmp_path, capsys):
    with small_fs(tmp_path / "small", 256) as small:
        assert data_prep_main(["--input", str(volume), "--name", "v", "--out", str(small)]) == 1
        assert "No space left on device" in one_error_line(capsys, "data_prep")
        assert [p for p in os.listdir(small) if not p.endswith(".lock")] == []
        assert data_prep_main(["--input", str(volume), "--name", "v", "--out", str(small)]) == 1  # again


def test_sigterm_during_data_prep_leaves_no_temporaries(volume, tmp_path):
    out = tmp_path / "data"
    code, err = sigterm_once([sys.executable, "-m", "data_prep", "--input", str(volume), "--name", "v",
                              "--out", str(out)],
                             lambda: out.is_dir() and [p for p in out.iterdir() if p.name.endswith(".tmp")])
    assert code == 130 and "no partial data set was left" in err, (code, err[-500:])
    assert [p.name for p in out.iterdir() if not p.name.endswith(".lock")] == []


def test_a_second_data_prep_on_one_data_set_is_refused_naming_the_first(volume, tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-m", "core.locks", str(lock_beside(tmp_path / "data" / "v")),
                               "data_prep --name v", str(tmp_path / "data" / "v"), "--", "sleep", "60"],
                              cwd=ROOT)
    try:
        deadline = time.time() + 30
        while not (lock_beside(tmp_path / "data" / "v").exists()
                   and lock_beside(tmp_path / "data" / "v").read_text()):
            assert time.time() < deadline
            time.sleep(0.01)
        assert data_prep_main(["--input", str(volume), "--name", "v", "--out", str(tmp_path / "data")]) == 2
        assert f"in use by pid {holder.pid} (data_prep --name v)" in one_error_line(capsys, "data_prep")
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------------- eval

def test_eval_tables_to_a_folder_or_a_read_only_place_are_one_line(model, tmp_path, capsys):
    hr = tmp_path / "hr"
    hr.mkdir()
    cv2.imwrite(str(hr / "a.png"), rng_image((60, 60), 256, np.uint8))
    run = make_run(tmp_path, model)
    (tmp_path / "folder.json").mkdir()
    assert eval_main(["--hr", str(hr), "--runs", str(run), "--json", str(tmp_path / "folder.json")]) == 2
    assert "is a folder" in one_error_line(capsys, "eval")
    with small_fs(tmp_path / "ro", 64, read_only=True) as ro:
        assert eval_main(["--hr", str(hr), "--runs", str(run), "--json", str(ro / "r.json"),
                          "--csv", str(tmp_path / "r.csv"), "--md", str(tmp_path / "r.md")]) == 2
        assert "read-only file system" in one_error_line(capsys, "eval")
    assert not (tmp_path / "r.csv").exists()  # checked before any table was written


def test_eval_s_three_tables_on_a_full_disk_are_all_written_or_none(model, tmp_path, capsys):
    """Issue #32: the JSON was left without the CSV and the Markdown. A disk of one page holds
    the first table's temporary and not the second's: none of the three appears."""
    hr, run = scorable_run(tmp_path, model, 60)
    with small_fs(tmp_path / "small", 4) as small:
        assert eval_main(["--hr", str(hr), "--runs", str(run), "--json", str(small / "r.json"),
                          "--csv", str(small / "r.csv"), "--md", str(small / "r.md")]) == 1
        line = one_error_line(capsys, "eval")
        assert "No space left on device" in line and str(small / "r.") in line, line
        assert os.listdir(small) == []


# -------------------------------------------------------------------------------- train

def test_training_on_a_disk_too_small_for_a_snapshot_stops_with_one_line(data_root, tmp_path, capsys):
    with small_fs(tmp_path / "small", 96) as small:
        run = small / "run"
        argv = ["--dataset", "toy", "--act", "relu", "--solver", "sgd", "--iters", "30",
                "--data-root", str(data_root), "--run-dir", str(run), *FAST]
        assert train_main(argv) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("train: error:") and "no space left for a snapshot" in last
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "stopped" and manifest["snapshots"] == []
        assert sorted(p.name for p in (run / "snapshots").iterdir()) == []


def test_a_run_that_cannot_even_start_leaves_no_folder(data_root, tmp_path, capsys):
    with small_fs(tmp_path / "tiny", 4) as tiny:
        (tiny / "filler").write_bytes(b"\0" * 4096)  # the file system is full now
        argv = ["--dataset", "toy", "--act", "relu", "--solver", "sgd", "--iters", "30",
                "--data-root", str(data_root), "--run-dir", str(tiny / "run"), *FAST]
        assert train_main(argv) == 1
        assert "No space left on device" in one_error_line(capsys, "train")
        assert sorted(os.listdir(tiny)) == [".run.lock", "filler"]


# ------------------------------------------------------------------------------- make

def test_make_upscale_runs_nothing_in_a_name_and_reads_paths_from_the_callers_folder(model, tmp_path):
    caller = tmp_path / "caller"
    caller.mkdir()
    picture = caller / "my scan.png"
    cv2.imwrite(str(picture), rng_image((20, 20), 256, np.uint8))
    run = make_run(tmp_path, model)
    # as a shell starts it: PWD names the folder make is called from (make -C leaves it)
    done = subprocess.run(["make", "-s", "-C", str(ROOT), "upscale", "IN=my scan.png", "OUT=x3 `touch pwned`.png",
                           f"RUN={run}"], cwd=caller, capture_output=True, text=True,
                          env=dict(os.environ, PWD=str(caller)))
    assert done.returncode == 0, done.stderr
    assert (caller / "x3 `touch pwned`.png").is_file()
    assert not (caller / "pwned").exists() and not (ROOT / "pwned").exists()
    assert Path(caller / "x3 `touch pwned`.png").stat().st_size > 0


# ------------------------------------------------------------------ Ctrl-C while loading

def loading_caffe(pid):
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    for p in [pid, *kids]:  # tools.train loads Caffe in its child (tools/supervisor.py)
        try:
            if "libcaffe" in Path(f"/proc/{p}/maps").read_text():
                return True
        except OSError:
            pass
    return False


@pytest.mark.parametrize("command", [["inference.upscale", "--in", "x.png", "--out", "y.png", "--reference", "prostate"],
                                     ["tools.train", "--dataset", "toy", "--act", "relu", "--solver", "sgd"],
                                     ["eval", "--dataset", "prostate"]])
def test_ctrl_c_while_an_entry_point_loads_caffe_is_no_traceback(command):
    child = subprocess.Popen([sys.executable, "-m", *command], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=dict(os.environ, GLOG_minloglevel="2"))
    deadline = time.time() + 60
    while not loading_caffe(child.pid) and child.poll() is None:
        assert time.time() < deadline
        time.sleep(0.001)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert "Traceback" not in err and child.returncode in (130, 2), (child.returncode, err)


def test_a_second_make_grid_on_one_checkout_is_refused_naming_the_first():
    """make grid holds runs/ (core.locks): make reproduce run twice at once would otherwise train
    the same runs twice. Refused before any data set is built or run started."""
    lock = lock_beside(ROOT / "runs")
    holder = subprocess.Popen([sys.executable, "-m", "core.locks", str(lock), "make grid", str(ROOT / "runs"),
                               "--", "sleep", "60"], cwd=ROOT)
    try:
        deadline = time.time() + 30
        while not (lock.exists() and lock.read_text()):
            assert time.time() < deadline
            time.sleep(0.01)
        done = subprocess.run(["make", "-s", "grid", "DATASETS=prostate", "ITERS=1"], cwd=ROOT,
                              capture_output=True, text=True)
        assert done.returncode != 0
        assert f"make grid: error: {ROOT / 'runs'} is in use by pid {holder.pid} (make grid)" in done.stderr
    finally:
        holder.kill()
        holder.wait()
