"""`python -m eval`, Fig. 6 and REPORT.md on a tiny trained run."""
import csv
import json
import shutil

import cv2
import pytest

from eval.__main__ import main as eval_main
from eval.figures import figure_for
from eval.report import report
from tests.helpers import FAST, eval_tables
from tools.train import main as train_main

pytestmark = pytest.mark.blas  # numbers summed by OpenBLAS (tools/blas_kernels.py)


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    run = root / "runs" / "toy" / "rrelu_nesterov"
    args = ["--dataset", "toy", "--act", "rrelu", "--solver", "nesterov", "--iters", "20",
            "--data-root", str(data_root), "--run-dir", str(run), *FAST]
    assert train_main(args) == 0
    return root, run, data_root / "toy" / "test_images"


def run_eval(trained, *extra, out="results"):
    root, run, hr = trained
    out = root / out
    code = eval_main(["--hr", str(hr), "--runs", str(run), *eval_tables(out, "toy"), *extra])
    return code, out


def test_eval_writes_json_csv_and_fig5_table(trained):
    code, out = run_eval(trained)
    assert code == 0
    result = json.loads((out / "toy.json").read_text())
    assert result["scale"] == 3 and list(result["methods"]) == ["bicubic", "rrelu_nesterov/seed0"]
    for method in result["methods"].values():
        assert [set(i) for i in method["images"]] == [{"name", "psnr", "ssim"}] * 2
        assert set(method["mean"]) == {"psnr", "ssim"}
    rows = list(csv.DictReader((out / "toy.csv").open()))
    assert len(rows) == 2 * 3 and {r["method"] for r in rows} == {"bicubic", "rrelu_nesterov/seed0"}
    table = (out / "toy.md").read_text()
    assert table.count("\n| ") == 1 + 2 + 1 and "rrelu_nesterov/seed0 PSNR" in table


def test_opencv_engine_scores_like_pycaffe(trained):
    # Each engine writes its own files: a run that fails (and writes nothing) cannot be
    # compared with the other engine's results, or with an earlier test's.
    code_caffe, out_caffe = run_eval(trained, out="results_caffe")
    code_cv, out_cv = run_eval(trained, "--engine", "opencv", out="results_opencv")
    assert code_caffe == code_cv == 0
    caffe_result = json.loads((out_caffe / "toy.json").read_text())
    cv_result = json.loads((out_cv / "toy.json").read_text())
    name = "rrelu_nesterov/seed0"
    a, b = caffe_result["methods"][name], cv_result["methods"][name]
    assert abs(a["mean"]["psnr"] - b["mean"]["psnr"]) < 0.01


def test_corrupt_caffemodel_is_one_clear_line(trained, tmp_path, capsys):
    root, run, hr = trained
    broken = tmp_path / "broken"
    (broken / "snapshots").mkdir(parents=True)
    manifest = json.loads((run / "manifest.json").read_text())
    shutil.copy(run / "deploy.prototxt", broken / "deploy.prototxt")
    (broken / "snapshots" / "bad.caffemodel").write_bytes(b"\x00not a model" * 50)
    manifest["snapshots"][-1]["caffemodel"] = "snapshots/bad.caffemodel"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"  # all three tables here: none in the checkout's results/
    out.mkdir()
    assert eval_main(["--hr", str(hr), "--runs", str(broken), *eval_tables(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eval: error:") and not any(out.iterdir())


def test_fig6_grid_and_report(trained):
    root, run, hr = trained
    assert run_eval(trained)[0] == 0
    path = figure_for("toy", run, root / "figures", hr_dir=hr)
    img = cv2.imread(str(path))
    assert img is not None and img.shape[1] > 600 and img.std() > 10
    text = report(root=root, datasets=["toy"])
    assert "| toy | rrelu_nesterov | 0 | 20 |" in text
    assert "figures/toy_fig6.png" in text and "Fig. 5: toy" in text


def test_figures_skip_a_reference_whose_data_set_is_not_built(tmp_path, monkeypatch, capsys, model):
    """A fresh clone holds models/reference/<d>/ for data sets it may not have built (make
    reproduce DATASETS=prostate): the figures of the others are still made."""
    import eval.figures as figures
    from tests.helpers import make_run
    # A project of its own: its data/ (not built), runs/ and models/reference/ (brain's only),
    # never the checkout's, which `make data` or `make reproduce` may have filled.
    references, data = tmp_path / "models" / "reference", tmp_path / "data"
    monkeypatch.setattr(figures, "ROOT", tmp_path)
    monkeypatch.setattr(figures, "REFERENCE_ROOT", references)
    monkeypatch.setattr(figures, "reference_dir", lambda d: references / d)
    monkeypatch.setattr(figures, "data_dir", lambda d: data / d)
    monkeypatch.setattr(figures, "dataset_runs", lambda d: [])
    references.mkdir(parents=True)
    make_run(tmp_path, model).rename(references / "brain")
    assert figures.main(["--out", str(tmp_path / "figures")]) == 2  # nothing else to draw
    err = capsys.readouterr().err
    assert "figures: brain: skipped (no data/brain: make data DATASET=brain)" in err
    assert "Traceback" not in err and "not a folder" not in err


def test_eval_built_scores_each_built_data_set_and_skips_the_rest(trained, capsys, monkeypatch):
    """make eval: `python -m eval --built DATASETS`, each built one as --dataset would."""
    root, run, hr = trained
    from eval import __main__ as entry
    calls = []
    monkeypatch.setattr(entry, "score", lambda args: calls.append(args.dataset) or 0)
    monkeypatch.setattr(entry, "is_built", lambda folder: folder.name == "prostate")
    assert eval_main(["--built", "brain", "prostate"]) == 0
    assert calls == ["prostate"]
    assert "eval: brain: not built (make data DATASET=brain); skipped" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        eval_main(["--built", "prostate", "--json", "x.json"])
