"""eval.results and `python -m eval`: methods named by run label and seed, no run dropped, the
long-schedule reference found, the scale taken from the runs (and refused when they disagree)."""
import csv
import json
import shutil

import cv2
import numpy as np
import pytest

from core.config import DEFAULT
from core.errors import DataError
from eval.__main__ import main as eval_main
from eval.__main__ import parse_args
from eval.metrics import METRICS
from eval.results import (LONG_SCHEDULE, common_scale, csv_text, dataset_methods, dataset_runs,
                          evaluate, markdown_table, name_runs)
from eval.score import load_hr_folder
from tests.helpers import FAST, eval_tables
from tools.train import main as train_main

pytestmark = pytest.mark.blas  # numbers summed by OpenBLAS (tools/blas_kernels.py)


def fake_run(run_dir, act="rrelu", solver="nesterov", seed=0, scale=3, snapshots=True, **extra):
    """A run directory's manifest (files need not exist until something loads them)."""
    run_dir.mkdir(parents=True)
    manifest = {"act": act, "solver": solver, "config": {"scale": scale}, "iterations_done": 20,
                "snapshots": [{"iter": 20, "caffemodel": str(run_dir / "m.caffemodel")}] if snapshots
                else [], **extra}
    if seed is not None:
        manifest["seed"] = seed
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_dir


def test_dataset_runs_finds_seed_directories_and_the_older_layout(tmp_path):
    runs = tmp_path / "runs" / "p"
    a = fake_run(runs / "rrelu_nesterov" / "seed1", seed=1)
    b = fake_run(runs / "rrelu_nesterov" / "seed0", seed=0)
    c = fake_run(runs / "relu_sgd", "relu", "sgd", seed=None)  # before seeds: seed 0
    fake_run(runs / "relu_nesterov" / "seed0", "relu", "nesterov", snapshots=False)  # untrained
    fake_run(runs / "long_schedule")  # make reference's training run: not a grid run
    assert dataset_runs("p", tmp_path) == [c, b, a]
    assert list(dataset_methods("p", tmp_path)) == ["relu_sgd/seed0", "rrelu_nesterov/seed0",
                                                    "rrelu_nesterov/seed1"]
    ref = fake_run(tmp_path / "models" / "reference" / "p", iterations_done=4000000)
    methods = dataset_methods("p", tmp_path)
    assert list(methods)[-1] == LONG_SCHEDULE and methods[LONG_SCHEDULE]["dir"] == ref
    # the other variants' long schedules, packed by make reference ACT= SOLVER=; one not yet trained
    packed = fake_run(tmp_path / "models" / "long" / "p" / "relu_sgd", "relu", "sgd")
    fake_run(tmp_path / "models" / "long" / "p" / "relu_nesterov", "relu", "nesterov", snapshots=False)
    fake_run(runs / "long" / "relu_sgd" / "seed0", "relu", "sgd")  # its training run: not a grid run
    methods = dataset_methods("p", tmp_path)
    assert list(methods)[-2:] == [LONG_SCHEDULE, f"{LONG_SCHEDULE}/relu_sgd"]
    assert methods[f"{LONG_SCHEDULE}/relu_sgd"]["dir"] == packed and len(methods) == 5
    assert {k: methods["rrelu_nesterov/seed1"][k] for k in ("variant", "seed", "iterations")} == \
        {"variant": "rrelu_nesterov", "seed": 1, "iterations": 20}


def test_runs_that_share_a_label_are_told_apart_by_their_directory(tmp_path):
    a = fake_run(tmp_path / "a" / "run")
    b = fake_run(tmp_path / "b" / "run")
    c = fake_run(tmp_path / "c", seed=2)
    named = name_runs([a, b, c, a])  # the same directory twice is one run
    assert list(named) == [f"rrelu_nesterov/seed0 ({a})", f"rrelu_nesterov/seed0 ({b})",
                           "rrelu_nesterov/seed2"]
    assert [i["dir"] for i in named.values()] == [a, b, c]


def test_repeated_runs_options_add_up(tmp_path):
    args = parse_args(["--hr", "x", "--runs", "a", "b", "--runs", "c"])
    assert [p.name for p in args.runs] == ["a", "b", "c"] and args.scale is None


def test_scale_comes_from_the_runs_and_a_mix_is_refused(tmp_path):
    x3 = name_runs([fake_run(tmp_path / "a")])
    assert common_scale(x3) == 3 and common_scale(x3, 3) == 3
    assert common_scale({}) == DEFAULT.scale and common_scale({}, 2) == 2
    with pytest.raises(DataError, match="contradicts"):
        common_scale(x3, 2)
    mixed = name_runs([tmp_path / "a", fake_run(tmp_path / "b", scale=2)])
    with pytest.raises(DataError, match="different scales"):
        common_scale(mixed)


@pytest.fixture
def hr_folder(tmp_path):
    folder = tmp_path / "hr"
    folder.mkdir()
    rng = np.random.RandomState(0)
    for i in range(2):
        cv2.imwrite(str(folder / f"im{i}.png"), rng.randint(0, 256, (40, 36)).astype(np.uint8))
    return folder


@pytest.mark.parametrize("scales,extra,message", [
    ((3, 2), [], "different scales"),
    ((3,), ["--scale", "2"], "--scale 2 contradicts"),
])
def test_eval_refuses_mixed_or_contradicted_scales_in_one_line(tmp_path, hr_folder, capsys,
                                                               scales, extra, message):
    runs = [str(fake_run(tmp_path / f"run{i}", scale=s)) for i, s in enumerate(scales)]
    out = tmp_path / "out"  # all three tables here: none in the checkout's results/
    out.mkdir()
    assert eval_main(["--hr", str(hr_folder), "--runs", *runs, *eval_tables(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eval: error:") and message in err[0]
    assert not any(out.iterdir())


def test_bicubic_only_takes_the_default_scale(tmp_path, hr_folder):
    out = tmp_path / "r"
    assert eval_main(["--hr", str(hr_folder), "--runs", *eval_tables(out, "a")]) == 0
    result = json.loads((out / "a.json").read_text())
    assert result["scale"] == DEFAULT.scale and list(result["methods"]) == ["bicubic"]
    assert result["methods"]["bicubic"]["variant"] is None
    assert next(csv.reader((out / "a.csv").open())) == ["method", "variant", "seed", "image", *METRICS]


@pytest.mark.slow
def test_two_copies_and_another_seed_are_all_scored(data_root, tmp_path):
    """A real tiny run, copied (same label) and relabelled seed 1: three methods, none dropped."""
    run = tmp_path / "runs" / "toy" / "rrelu_nesterov" / "seed0"
    assert train_main(["--dataset", "toy", "--act", "rrelu", "--solver", "nesterov", "--iters",
                       "10", "--data-root", str(data_root), "--run-dir", str(run), *FAST]) == 0
    copy = tmp_path / "elsewhere" / "seed0"
    shutil.copytree(run, copy)
    seed1 = tmp_path / "runs" / "toy" / "rrelu_nesterov" / "seed1"
    shutil.copytree(run, seed1)
    manifest = json.loads((seed1 / "manifest.json").read_text())
    (seed1 / "manifest.json").write_text(json.dumps(dict(manifest, seed=1)))

    result = evaluate(load_hr_folder(data_root / "toy" / "test_images"), [run, copy, seed1])
    names = list(result["methods"])
    assert names == ["bicubic", f"rrelu_nesterov/seed0 ({run})", f"rrelu_nesterov/seed0 ({copy})",
                     "rrelu_nesterov/seed1"]
    entries = [result["methods"][n] for n in names[1:]]
    assert [(e["variant"], e["seed"], e["iterations"]) for e in entries] == \
        [("rrelu_nesterov", 0, 10), ("rrelu_nesterov", 0, 10), ("rrelu_nesterov", 1, 10)]
    assert [e["run"] for e in entries] == [str(run), str(copy), str(seed1)]
    assert entries[0]["mean"] == entries[1]["mean"] == entries[2]["mean"]  # same weights
    assert result["scale"] == 3 and result["border"] == 3
    rows = list(csv.DictReader(csv_text(result).splitlines()))
    assert {r["method"] for r in rows} == set(names) and len(rows) == 4 * 3
    table = markdown_table(result, "toy")
    assert all(f"{n} {m.title}" in table for n in names for m in METRICS.values())


def test_fig6_prefers_the_long_schedule_then_the_papers_net_of_seed0(tmp_path):
    from eval.figures import preferred_run
    relu = fake_run(tmp_path / "relu_sgd" / "seed0", "relu", "sgd")
    seed1 = fake_run(tmp_path / "rrelu_nesterov" / "seed1", seed=1)
    seed0 = fake_run(tmp_path / "rrelu_nesterov" / "seed0", seed=0)
    ref = fake_run(tmp_path / "reference" / "toy")
    assert preferred_run([relu, seed1, seed0], ref) == (ref, "long schedule")
    assert preferred_run([relu, seed1, seed0]) == (seed0, None)
    assert preferred_run([relu, seed1]) == (seed1, None)
    assert preferred_run([relu]) == (relu, None)
