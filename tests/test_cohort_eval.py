"""Training and scoring a cohort set (issue 33, deliverable 3): the test images' patients come from
the data set's manifest (core.datasets.image_patients); `make eval` aggregates per patient beside
the mean over images; REPORT.md and the claims' paired test work over patients when there are two
or more; the default data sets, which name no patients, are shown as before."""
import csv
import io
import json

import h5py
import pytest

from core.datasets import image_patients, read_image_patients
from core.errors import DataError
from eval.claims import PATIENT_RULE, SUPPORTED, IMAGES_DISAGREE, pair_line
from eval.report import report
from eval.results import BICUBIC, csv_text, markdown_table, tables_text
from eval.score import patient_summary, score_method

pytestmark = pytest.mark.blas  # numbers summed by OpenBLAS (tools/blas_kernels.py)


def cohort_manifest():
    """A cohort manifest: patient "P_1" (an '_' in the ID) with two test series, "P2" with one
    test series, "P3" training only."""
    series = [{"patient": "P_1", "role": "test", "name": "P_1_t2"},
              {"patient": "P_1", "role": "test", "name": "P_1_t2-2"},
              {"patient": "P2", "role": "test", "name": "P2_t2"},
              {"patient": "P3", "role": "train", "name": "P3_t2"}]
    tests = ["P_1_t2_0000", "P_1_t2-2_0003", "P2_t2_0000", "P2_t2_0001"]
    return {"cohort": {"series": series}, "test_slices": tests, "train_slices": ["P3_t2_0000"]}


def test_a_test_images_patient_is_its_series_patient_in_the_manifest():
    assert image_patients(cohort_manifest()) == {"P_1_t2_0000": "P_1", "P_1_t2-2_0003": "P_1",
                                                "P2_t2_0000": "P2", "P2_t2_0001": "P2"}


def test_a_data_set_without_a_cohort_names_no_patients(data_root):
    """The default data sets and a single-series set: no patients (their tables are as before)."""
    assert image_patients({"split": {"test_count": 7}, "test_slices": ["s00"]}) is None
    assert read_image_patients(data_root / "toy") is None


def test_an_image_of_no_test_series_is_one_line(tmp_path):
    m = cohort_manifest()
    m["test_slices"].append("P3_t2_0001")  # a training patient's slice among the test images
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="P3_t2_0001"):
        read_image_patients(tmp_path)


def rows(values):
    """Image rows of (patient, psnr): ssim follows psnr / 100."""
    return [{"name": f"{p}_{i}", "patient": p, "psnr": v, "ssim": v / 100}
            for i, (p, v) in enumerate(values)]


def test_each_patient_counts_once_however_many_images_it_has():
    # A: one image at 30; B: three at 20: the mean over images is 22.5, over patients 25
    summary = patient_summary(rows([("A", 30.0), ("B", 20.0), ("B", 20.0), ("B", 20.0)]))
    assert summary["n"] == 2
    assert summary["mean"]["psnr"] == pytest.approx(25.0)
    assert summary["sd"]["psnr"] == pytest.approx(7.0710678)  # sample sd of 30 and 20
    assert [(e["patient"], e["images"], e["psnr"]) for e in summary["each"]] == [("A", 1, 30.0),
                                                                                 ("B", 3, 20.0)]
    one = patient_summary(rows([("A", 30.0), ("A", 20.0)]))
    assert one["n"] == 1 and one["mean"]["psnr"] == 25.0 and one["sd"]["psnr"] is None


def test_scoring_names_each_images_patient_and_refuses_an_unknown_image(rng_images):
    scored = score_method(rng_images, lambda x: x, patients={"a": "P1", "b": "P2", "c": "P2"})
    assert [r["patient"] for r in scored["images"]] == ["P1", "P2", "P2"]
    assert scored["patients"]["n"] == 2
    assert "patients" not in score_method(rng_images, lambda x: x)  # no patients: as before
    with pytest.raises(DataError, match="c: a test image"):
        score_method(rng_images, lambda x: x, patients={"a": "P1", "b": "P2"})


@pytest.fixture
def rng_images():
    import numpy as np
    rng = np.random.RandomState(0)
    return [(n, rng.randint(0, 256, (48, 48)).astype(np.uint8)) for n in "abc"]


def entry(values, variant=None, seed=None):
    """A method entry scored per patient: ``values`` [(patient, psnr)] per image."""
    images = rows(values)
    mean = {k: sum(r[k] for r in images) / len(images) for k in ("psnr", "ssim")}
    act, _, solver = (variant or "_").partition("_")
    return {"variant": variant, "act": act or None, "solver": solver or None, "seed": seed,
            "iterations": None if variant is None else 20, "run": None,
            "images": images, "mean": mean, "patients": patient_summary(images)}


def cohort_result(gains):
    """bicubic and rrelu_nesterov over seeds 0-2: patient k's images are ``gains[k]`` dB better."""
    patients = [f"P{k}" for k in range(len(gains))]
    base = [(p, 30.0 + i) for p in patients for i in range(3)]
    methods = {BICUBIC: entry(base)}
    for seed in range(3):
        net = [(p, v + gains[patients.index(p)] + seed / 1000) for p, v in base]
        methods[f"rrelu_nesterov/seed{seed}"] = entry(net, "rrelu_nesterov", seed)
    return {"scale": 3, "border": 3, "frame": "replicate", "methods": methods}


def test_the_tables_give_the_mean_over_patients_its_sd_and_count():
    result = cohort_result([1.0, 3.0])
    table = markdown_table(result, "c")
    assert "| **mean over 6 images** |" in table
    assert "| **mean over 2 patients** (± sd across them) | 31.00 ± 0.00 | 0.3100 ± 0.0000 | " \
           "33.00 ± 1.41 |" in table
    assert "| P1 | 3 | 31.00 | 0.3100 | 34.00 |" in table
    lines = list(csv.reader(io.StringIO(csv_text(result))))
    assert lines[0] == ["method", "variant", "seed", "image", "patient", "psnr", "ssim"]
    assert ["bicubic", "bicubic", "", "P0_0", "P0", "30.0000", "0.300000"] in lines
    assert ["rrelu_nesterov/seed0", "rrelu_nesterov", "0", "mean over patients", "2 patients",
            "33.0000", "0.330000"] in lines
    assert ["rrelu_nesterov/seed0", "rrelu_nesterov", "0", "sd over patients", "2 patients",
            "1.4142", "0.014142"] in lines
    assert json.loads(tables_text(result, "c")["json"])["methods"][BICUBIC]["patients"]["n"] == 2


def test_a_set_without_patients_keeps_its_tables():
    result = cohort_result([1.0, 3.0])
    for method in result["methods"].values():
        del method["patients"]
        for image in method["images"]:
            del image["patient"]
    assert csv_text(result).splitlines()[0] == "method,variant,seed,image,psnr,ssim"
    table = markdown_table(result, "c")
    assert "| **mean** |" in table and "patient" not in table


def test_the_paired_test_counts_patients_not_images():
    """Six patients all ahead: supported per patient (p = 2/64); two patients of three images
    each, all six images ahead, would pass a per-image sign test (p = 2/64 too), and per patient
    they cannot (p = 0.5)."""
    six = cohort_result([0.5] * 6)
    variants = {k: six["methods"][f"rrelu_nesterov/seed{k}"] for k in range(3)}
    line = pair_line("The net beats bicubic", "rrelu_nesterov", "bicubic", variants,
                     {None: six["methods"][BICUBIC]})
    assert f"per patient: A ahead on 6 of 6 patients (sign test p=0.031), +0.50 ± 0.00 dB: " \
           f"{SUPPORTED}" in line
    two = cohort_result([0.5, 0.5])
    variants = {k: two["methods"][f"rrelu_nesterov/seed{k}"] for k in range(3)}
    line = pair_line("The net beats bicubic", "rrelu_nesterov", "bicubic", variants,
                     {None: two["methods"][BICUBIC]})
    assert "per patient: A ahead on 2 of 2 patients (sign test p=0.5)" in line
    assert IMAGES_DISAGREE in line and "per image" not in line


def test_one_patient_is_judged_per_image():
    one = cohort_result([0.5])
    variants = {k: one["methods"][f"rrelu_nesterov/seed{k}"] for k in range(3)}
    line = pair_line("t", "rrelu_nesterov", "bicubic", variants, {None: one["methods"][BICUBIC]})
    assert "per image: A ahead on 3 of 3 (sign test" in line and "patient" not in line


def test_the_report_gives_a_cohort_per_patient_and_states_the_rule(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "mycohort.json").write_text(tables_text(cohort_result([1.0, 3.0]), "c")["json"])
    text = report(root=tmp_path)  # the default sets (none scored here) and every cohort set
    assert "## mycohort" in text and "Test images: 6 of 2 test patients, x3." in text
    assert PATIENT_RULE in text and "### Per patient (the claims below are judged per patient" in text
    assert "| **mean over 2 patients** (± sd across them) | 6 | **31.00** ± 0.00 | **33.00** ± 1.41 |" in text
    assert "per patient: A ahead on 2 of 2 patients" in text
    # a report of the default sets alone has no word of patients
    (tmp_path / "results" / "mycohort.json").unlink()
    assert "patient" not in report(root=tmp_path).lower()


# ------------------------------------------------------------------ a synthetic cohort, end to end

@pytest.mark.slow
def test_a_cohort_set_of_many_shards_trains_and_is_scored_per_patient(tmp_path, monkeypatch):
    """Four synthetic patients (two of them test patients), shard_mb=1 forcing several training
    shards: 20 iterations of `make train`'s trainer, then `make eval`'s scoring per patient."""
    from data_prep.__main__ import main as data_prep_main
    from eval import __main__ as eval_entry
    from tests.helpers import FAST, eval_tables
    from tools.synth_cohort import write_cohort
    from tools.train import main as train_main

    tree, data = tmp_path / "study tree", tmp_path / "data"
    write_cohort(tree, 4, seed=3, crop=64)
    assert data_prep_main(["--input", str(tree), "--name", "c", "--out", str(data), "--series",
                           "t2_tse", "--test-patients", "2", "shard_mb=1"]) == 0
    manifest = json.loads((data / "c" / "manifest.json").read_text())
    assert len(manifest["files"]["train"]) >= 2
    with h5py.File(data / "c" / manifest["files"]["train"][0]) as f:
        assert len(f["data"]) < manifest["patches"]["train"]
    run = tmp_path / "run"
    assert train_main(["--dataset", "c", "--act", "rrelu", "--solver", "nesterov", "--iters", "20",
                       "--data-root", str(data), "--run-dir", str(run), *FAST]) == 0
    assert json.loads((run / "manifest.json").read_text())["iterations_done"] == 20

    monkeypatch.setattr(eval_entry, "data_dir", lambda name: data / name)
    assert eval_entry.main(["--dataset", "c", "--runs", str(run), *eval_tables(tmp_path, "c")]) == 0
    result = json.loads((tmp_path / "c.json").read_text())
    test_patients_ = manifest["cohort"]["split"]["test_patients"]
    for method in result["methods"].values():
        assert [e["patient"] for e in method["patients"]["each"]] == test_patients_
        assert [e["images"] for e in method["patients"]["each"]] == [19, 19]
        assert {r["patient"] for r in method["images"]} == set(test_patients_)
    assert "| **mean over 2 patients** (± sd across them) |" in (tmp_path / "c.md").read_text()
