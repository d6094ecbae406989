"""The cohort growth benchmark (issue 33, deliverable 5): tools/bench_cohort.py at a tiny size, the
process-tree memory it reports (tools/tree_memory.py), and the generator's series cap and workers
(tools/synth_cohort.py). A separate file from test_bench.py, whose tests are all marked blas."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools import bench_cohort
from tools.synth_cohort import write_cohort
from tools.tree_memory import run_measured

CROP = 48  # one patch side and a bit: 4 training patches a slice
MIB = 2 ** 20


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A one-series "study" (a cropped T2 copy): with the shipped T2 series, two T2 series a
    synthetic patient."""
    root = tmp_path_factory.mktemp("study") / "study"
    write_cohort(root, 1, seed=9, decoys=False, corrupt=False, crop=CROP)
    return root


def files_of(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_generator_stops_at_the_series_asked_for_and_writes_the_same_bytes_in_workers(
        study, tmp_path):
    one = write_cohort(tmp_path / "one", 9, seed=1, studies=[study], crop=CROP, t2_series=3)
    two = write_cohort(tmp_path / "two", 9, seed=1, studies=[study], crop=CROP, t2_series=3, jobs=2)
    assert one == two == ["SYN-0001", "SYN-0002"]  # 2 + 1 T2 series
    assert files_of(tmp_path / "one") == files_of(tmp_path / "two")
    t2 = [p for p in (tmp_path / "one").glob("*/*/*") if "t2 tse tra" in p.name]
    assert len(t2) == 3 and len([p for p in t2 if p.parts[-3] == "SYN-0002"]) == 1


ALLOCATE = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    print("started", flush=True)
    pid = os.fork()
    held = np.ones(100 * 2 ** 20 // 8)  # each process its own 100 MiB: nothing shared
    time.sleep(1.0)
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
""")


@pytest.mark.slow  # a subprocess and its child
def test_the_peak_is_of_the_whole_process_tree_not_of_its_largest_process(tmp_path):
    m = run_measured([sys.executable, "-c", ALLOCATE], None, tmp_path / "log", interval=0.05)
    assert m.returncode == 0 and m.first_line_s is not None and m.peak_processes == 2
    # both processes' 100 MiB at once, where one process never held more than its own
    assert m.peak_pss_tree >= 190 * MIB and m.peak_rss_tree >= m.peak_pss_tree - 10 * MIB
    assert 100 * MIB <= m.peak_rss_process < 150 * MIB
    assert m.hwm_sum >= m.peak_rss_tree
    assert 0 < m.cpu_s < 2 * m.wall_s  # two processes, mostly asleep
    assert (tmp_path / "log").read_text().startswith("started")


def bench(study, tmp_path, *extra):
    return bench_cohort.main(["--sizes", "3,4", "--crop", str(CROP), "--study", str(study),
                              "--gen-jobs", "1", "--interval", "0.05",
                              "--out", str(tmp_path / "cohort.json"),
                              "--table", str(tmp_path / "cohort.md"), *extra])


@pytest.mark.slow  # two trees, four data_prep subprocesses
def test_a_tiny_benchmark_measures_each_size_and_jobs_and_leaves_nothing(study, tmp_path, capsys):
    work = tmp_path / "work"
    study_before = files_of(study)
    assert bench(study, tmp_path, "--work", str(work)) == 0
    result = json.loads((tmp_path / "cohort.json").read_text())
    runs = result["runs"]
    assert [(r["size"], r["jobs"]) for r in runs] == [(3, 1), (3, 2), (4, 1), (4, 2)]
    for r in runs:
        assert r["series"] == r["size"] and r["patients"] == 2  # 2 + 1, then 2 + 2 series
        assert r["slices"] == 19 * r["size"] == r["slices_train"] + r["slices_test"]
        assert r["patches"] == r["patches_train"] + r["patches_test"] > 0
        assert r["disk_ratio"] == round(r["disk_bytes"] / (r["patches"] * 6120), 4)
        assert r["slices_per_s"] == pytest.approx(r["slices"] / r["wall_s"], abs=0.01)
        assert r["slices_per_cpu_s"] == pytest.approx(r["slices"] / r["cpu_s"], abs=0.01)
        assert 0 < r["plan_s"] < r["wall_s"]
        assert 0 < r["peak_rss_process_mb"] <= r["peak_rss_tree_mb"] <= r["hwm_sum_mb"]
        assert r["peak_processes"] >= r["jobs"]  # -j 2: the build's workers are in the tree
    by = {(r["size"], r["jobs"]): r for r in runs}
    assert by[3, 1]["patches"] == by[3, 2]["patches"] and by[3, 1]["patches"] < by[4, 1]["patches"]
    assert by[3, 1]["time_per_slice_vs_smallest"] == by[3, 2]["rss_vs_smallest"] == 1.0
    assert by[3, 2]["cpu_per_slice_vs_smallest"] == 1.0 and by[4, 1]["cpu_per_slice_vs_smallest"] > 0
    assert set(result["checks"]) == {"time_linear_in_slices", "slices_per_s_j2_at_largest",
                                     "peak_rss_flat_and_bounded", "disk_within_5_percent"}
    assert result["checks"]["slices_per_s_j2_at_largest"]["size"] == 4
    table = (tmp_path / "cohort.md").read_text()
    assert table == result["table"] and len(table.splitlines()) == 2 + 4
    out = capsys.readouterr().out
    assert table in out and "disk_within_5_percent: " in out
    assert not work.exists()  # made here, emptied and removed: trees, data sets and logs
    assert files_of(study) == study_before


@pytest.mark.slow  # a tree and two data_prep subprocesses
def test_kept_trees_are_reused_and_only_the_tools_files_are_removed(study, tmp_path):
    work = tmp_path / "work"

    def once(name, *extra):
        assert bench_cohort.main(["--sizes", "3", "--jobs", "1", "--work", str(work), "--crop",
                                  str(CROP), "--study", str(study), "--gen-jobs", "1",
                                  "--out", str(tmp_path / f"{name}.json"),
                                  "--table", str(tmp_path / f"{name}.md"), *extra]) == 0
        return json.loads((tmp_path / f"{name}.json").read_text())["runs"][0]
    first = once("a", "--keep")
    assert first["tree_write_s"] > 0
    assert (work / f"tree-3-crop{CROP}").is_dir()
    assert (work / "data" / "bench3_j1" / "manifest.json").is_file()
    again = once("b")
    assert again["tree_write_s"] == 0 and again["patches"] == first["patches"]
    assert [p.name for p in work.iterdir()] == [bench_cohort.MARK]  # ours, kept by the first run


def test_sizes_that_are_not_counts_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        bench_cohort.parse_args(["--sizes", "10,x"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "'10,x'" in err


def test_a_work_folder_of_someone_elses_is_refused(study, tmp_path, capsys):
    work = tmp_path / "theirs"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    assert bench(study, tmp_path, "--work", str(work)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench_cohort: error: ") and "did not write" in err and "\n" not in err
    assert [p.name for p in work.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "cohort.json").exists()


def test_too_little_disk_is_one_line_before_any_tree_is_written(study, tmp_path, capsys,
                                                                 monkeypatch):
    class Usage:
        free = 10 * MIB
    monkeypatch.setattr(bench_cohort.shutil, "disk_usage", lambda _: Usage)
    work = tmp_path / "work"
    assert bench(study, tmp_path, "--work", str(work)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench_cohort: error: ") and "GB free" in err and "\n" not in err
    assert not work.exists() and not (tmp_path / "cohort.json").exists()


def test_the_estimate_is_an_upper_bound_of_a_full_size_data_set():
    # A 384 x 384 slice: 26 x 26 training patches of 6,120 bytes (issue 33's 676 and 4.1 MB).
    assert bench_cohort.patches_per_slice(384, bench_cohort.DEFAULT, 14) == 676
    tree, data = bench_cohort.estimate_bytes(1000, 3, Path(bench_cohort.PROSTATE_DIR), None)
    assert data >= 1000 * 19 * 676 * 6120


@pytest.mark.slow  # a subprocess
def test_the_module_runs_as_a_command():
    done = subprocess.run([sys.executable, "-m", "tools.bench_cohort", "--help"],
                          capture_output=True, text=True, cwd=bench_cohort.ROOT)
    assert done.returncode == 0 and "--sizes" in done.stdout
