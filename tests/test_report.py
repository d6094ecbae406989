"""REPORT.md from fixture results and manifests: Fig. 5 tables beside the paper's numbers (read from
core.paper), seeds, and the claims judged by paired differences against their spread."""
import json

import pytest

from core import paper
from eval.claims import (CONTRADICTED, NEGLIGIBLE, ONE_SEED, SUPPORTED, WITHIN, claim_lines, judge,
                         judge_images, long_claim_lines, one_factor_pairs, sign_test)
from eval.report import main as report_main
from eval.report import report
from eval.report_tables import sci, split

pytestmark = pytest.mark.blas  # numbers summed by OpenBLAS (tools/blas_kernels.py)

# Fixture numbers standing in for the paper's transcription (never the real ones).
FAKE_FIG5 = {
    "scale": 3,
    "datasets": {"prostate": {
        "panel": "a", "modality": "MR", "test_images": 2,
        "bicubic": {"mean": {"psnr": 11.11, "ssim": 0.1111}, "psnr": [11.01, 11.21], "ssim": None},
        "rrelu_nesterov": {"mean": {"psnr": 12.34, "ssim": 0.2345}, "psnr": None, "ssim": None}}},
    "schedule": {"max_iter": 7000000, "curve_first_test": 500000, "curve_test_interval": 3000000},
}


@pytest.fixture
def fake_paper(monkeypatch):
    monkeypatch.setattr(paper, "fig5", lambda: FAKE_FIG5)


def method(psnrs, ssims, variant=None, seed=None, iterations=3000):
    """A results-JSON method entry with two images' values."""
    images = [{"name": f"img{i}", "psnr": p, "ssim": s} for i, (p, s) in enumerate(zip(psnrs, ssims))]
    mean = {"psnr": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims)}
    act, _, solver = (variant or "_").partition("_")
    return {"variant": variant, "act": act or None, "solver": solver or None, "seed": seed,
            "iterations": None if variant is None else iterations,
            "run": None if variant is None else f"runs/x/{variant}/seed{seed}",
            "images": images, "mean": mean}


def prostate_result():
    """Paper grid, 3 seeds: the net beats bicubic clearly; net vs baseline is within the spread."""
    methods = {"bicubic": method([30.0, 32.0], [0.80, 0.84])}
    for seed, (gain, base) in enumerate([(0.50, 0.20), (0.52, 0.72), (0.48, 0.38)]):
        methods[f"rrelu_nesterov/seed{seed}"] = method(
            [30.0 + gain, 32.0 + gain], [0.81, 0.85], "rrelu_nesterov", seed)
        methods[f"relu_sgd/seed{seed}"] = method([30.0 + base, 32.0 + base], [0.805, 0.845],
                                                 "relu_sgd", seed)
    methods["long_schedule"] = method([31.0, 33.0], [0.83, 0.87], "rrelu_nesterov", 0, 4000000)
    methods["long_schedule/relu_nesterov"] = method([31.1, 32.95], [0.83, 0.87], "relu_nesterov", 0,
                                                    4000000)
    return {"scale": 3, "border": 3, "frame": "replicate", "methods": methods}


def breast_result():
    """Full grid, one seed: nothing may be called supported."""
    methods = {"bicubic": method([36.0, 37.0], [0.94, 0.95])}
    for i, variant in enumerate(["relu_sgd", "relu_nesterov", "rrelu_sgd", "rrelu_nesterov"]):
        methods[f"{variant}/seed0"] = method([36.1 + i / 10, 37.1 + i / 10], [0.945, 0.955], variant, 0)
    return {"scale": 3, "border": 3, "frame": "replicate", "methods": methods}


def write_manifest(run_dir, act, solver, seed, iters=3000):
    run_dir.mkdir(parents=True)
    tests = [{"iter": iters, "psnr": 30.5 + seed / 10, "ssim": 0.81, "loss": 1e-3}]
    (run_dir / "manifest.json").write_text(json.dumps({
        "dataset": "prostate", "act": act, "solver": solver, "seed": seed, "status": "done",
        "iterations_done": iters, "wall_time_s": 120.0, "tests": tests,
        "bicubic": {"psnr": 30.0, "ssim": 0.8}, "snapshots": [{"iter": iters, "caffemodel": "x"}],
        "config": {"scale": 3, "max_iter": iters}}))


@pytest.fixture
def project(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "prostate.json").write_text(json.dumps(prostate_result()))
    (tmp_path / "results" / "breast.json").write_text(json.dumps(breast_result()))
    for seed in range(3):
        write_manifest(tmp_path / "runs" / "prostate" / "rrelu_nesterov" / f"seed{seed}",
                       "rrelu", "nesterov", seed)
    write_manifest(tmp_path / "runs" / "prostate" / "relu_sgd", "relu", "sgd", 0)  # older layout
    write_manifest(tmp_path / "models" / "reference" / "prostate", "rrelu", "nesterov", 0, 4000000)
    write_manifest(tmp_path / "models" / "long" / "prostate" / "relu_nesterov", "relu", "nesterov", 0, 4000000)
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "prostate_fig3.png").write_bytes(b"png")
    return tmp_path


# --- the judging rule ------------------------------------------------------------------------

def test_judge_follows_the_rule():
    assert judge([0.50, 0.52, 0.48])["verdict"] == SUPPORTED
    assert judge([-0.50, -0.52, -0.48])["verdict"] == CONTRADICTED
    spread = judge([0.3, -0.2, 0.1])
    assert spread["verdict"] == WITHIN and spread["n"] == 3 and spread["mean"] == pytest.approx(0.2 / 3)
    assert judge([0.4, 0.1])["verdict"] == WITHIN  # mean 0.25, sd 0.21: 0.25 < 2 sd
    assert judge([0.2, 0.2])["verdict"] == SUPPORTED  # no spread at all
    one = judge([5.0])
    assert one["verdict"] == ONE_SEED and one["sd"] is None and one["mean"] == 5.0
    assert judge([])["n"] == 0


def test_claims_with_the_paper_grid_say_what_cannot_be_judged():
    bicubic, variants, _ = split(prostate_result())
    lines = claim_lines(variants, bicubic)
    net = next(line for line in lines if "The net beats bicubic" in line)
    assert "PSNR +0.50 ± 0.02 dB (mean ± sd of 3 seeds): supported" in net
    assert "SSIM +0.0100 ± 0.0000 (mean ± sd of 3 seeds): supported" in net
    assert any("RReLU beats ReLU**: cannot be judged" in line for line in lines)
    assert any("NAG beats SGD**: cannot be judged" in line for line in lines)
    baseline = next(line for line in lines if "baseline" in line)
    assert "(rrelu_nesterov - relu_sgd)" in baseline and "PSNR +0.07 ± 0.25 dB" in baseline
    assert baseline.split("PSNR ")[1].split(";")[0].endswith(WITHIN)


def test_claims_with_one_seed_are_never_supported():
    bicubic, variants, _ = split(breast_result())
    lines = claim_lines(variants, bicubic)
    assert len(lines) == 5  # net vs bicubic, 2 same-solver and 2 same-activation pairs
    assert all(ONE_SEED in line and f": {SUPPORTED}" not in line for line in lines)
    assert any("RReLU beats ReLU, same solver, sgd** (rrelu_sgd - relu_sgd): PSNR +0.20 dB (seed 0)"
               in line for line in lines)
    assert not any("baseline" in line for line in lines)  # both claims have their own pairs


def test_every_pair_that_differs_in_one_factor_is_compared_the_papers_claims_first():
    names = [f"{a}_{s}" for a in ("relu", "rrelu") for s in ("sgd", "nesterov", "adam")]
    pairs = one_factor_pairs(names)
    assert len(pairs) == 3 + 2 * 3  # activation pairs per solver, solver pairs per activation
    assert [p[0] for p in pairs[:4]] == [
        "RReLU beats ReLU, same solver, nesterov", "RReLU beats ReLU, same solver, sgd",
        "NAG beats SGD, same activation, relu", "NAG beats SGD, same activation, rrelu"]
    assert ("adam beats nesterov, same activation, relu", "relu_adam", "relu_nesterov") in pairs
    assert ("adam beats sgd, same activation, rrelu", "rrelu_adam", "rrelu_sgd") in pairs
    assert ("RReLU beats ReLU, same solver, adam", "rrelu_adam", "relu_adam") in pairs
    assert not any({a, b} == {"relu_sgd", "rrelu_nesterov"} for _, a, b in pairs)  # two factors
    # a user's two solver files: neither is the paper's, so by name
    assert one_factor_pairs(["relu_fast", "relu_anneal"]) == [
        ("anneal beats fast, same activation, relu", "relu_anneal", "relu_fast")]


def test_the_sign_test_is_the_binomial_tail():
    assert sign_test(11, 1) == pytest.approx(2 * (1 + 12) / 2 ** 12)
    assert sign_test(3, 3) == 1.0 and sign_test(0, 0) == 1.0
    assert sign_test(0, 6) == pytest.approx(2 / 64)


def test_per_image_differences_judge_one_run_pairs():
    ahead = judge_images([0.03] * 11 + [-0.01], resolution=0.005)
    assert (ahead["wins"], ahead["losses"], ahead["verdict"]) == (11, 1, SUPPORTED)
    assert ahead["mean"] == pytest.approx((0.33 - 0.01) / 12)
    behind = judge_images([-0.03] * 10 + [0.01] * 2, resolution=0.005)
    assert behind["verdict"] == CONTRADICTED
    mixed = judge_images([0.05, -0.04] * 6, resolution=0.005)
    assert mixed["p"] == 1.0 and mixed["verdict"] not in (SUPPORTED, CONTRADICTED)
    assert judge_images([0.001] * 12, resolution=0.005)["verdict"] == NEGLIGIBLE


def test_long_schedules_are_judged_per_image_and_only_at_equal_lengths():
    base = [30.0 + i for i in range(12)]
    longs = {"rrelu_nesterov": method(base, [0.8] * 12, "rrelu_nesterov", 0, 100000),
             "relu_nesterov": method([b + 0.04 for b in base], [0.8] * 12, "relu_nesterov", 0, 100000),
             "rrelu_sgd": method(base, [0.8] * 12, "rrelu_sgd", 0, 60000)}
    lines = long_claim_lines(longs)
    act = next(line for line in lines if "RReLU beats ReLU" in line)
    assert "at 100000 iterations** (rrelu_nesterov - relu_nesterov)" in act
    assert "(rrelu_nesterov - relu_nesterov): PSNR -0.04 dB; per image: A ahead on 0 of 12 (sign " \
           f"test p=0.00049), -0.04 ± 0.00 dB: {CONTRADICTED}." in act
    solver = next(line for line in lines if "NAG beats SGD" in line)
    assert "not judged: rrelu_nesterov has 100000 iterations, rrelu_sgd 60000" in solver
    longs["relu_sgd"] = method([b - 0.02 for b in base], [0.8] * 12, "relu_sgd", 0, 100000)
    both = long_claim_lines(longs)[-1]
    assert both.startswith("- **The paper's net beats its baseline (RReLU+NAG vs ReLU+SGD), at 100000 "
                           "iterations** (rrelu_nesterov - relu_sgd): PSNR +0.02 dB; per image: A ahead on 12 of 12")


def test_sci_writes_iterations_as_the_paper():
    assert [sci(n) for n in (4000000, 1000000, 2500000, 3000, 20)] == ["4e6", "1e6", "2.5e6", "3e3", "20"]


# --- REPORT.md -------------------------------------------------------------------------------

def test_report_puts_the_papers_numbers_beside_ours(project, fake_paper):
    text = report(root=project, datasets=["prostate", "breast", "brain"], command="make reproduce SEEDS=3")
    assert "make reproduce SEEDS=3" in text
    # Summary: the paper's (fixture) means and gain, our net over 3 seeds, the long schedule.
    row = next(line for line in text.splitlines() if line.startswith("| prostate (Fig. 5a, MR) | 11.11"))
    assert "| 11.11 | 12.34 | +1.23 | 31.00 | 31.50 ± 0.02 (n=3) | +0.50 | 32.00 | +1.00 |" in row
    assert "| 0.1111 | 0.2345 | +0.1234 |" in text
    # Fig. 5 table: per image, mean, gain, then the paper's means in bicubic's and the net's columns.
    assert "| image | bicubic | rrelu_nesterov (mean of 3 seeds) | relu_sgd (mean of 3 seeds) | " \
           "long schedule (rrelu_nesterov, 4000000 its) |" in text
    assert "| img0 | 30.00 | 30.50 | 30.43 | 31.00 |" in text
    assert "| paper's mean (Fig. 5) | 11.11 | 12.34 | – | – |" in text
    assert "| paper's gain over bicubic | – | +1.23 | – | – |" in text
    assert "| bicubic PSNR | 11.01 | 11.21 |" in text  # the paper's per-image values
    # Each seed, and each variant's mean ± sd.
    assert "| rrelu_nesterov | 1 | 3000 | 31.52 | 0.8300 | +0.52 | +0.0100 |" in text
    assert "| **rrelu_nesterov** | mean ± sd | – | 31.50 ± 0.02 (n=3) |" in text
    # Claims and the rule.
    assert "mean(d) > 2 x sd(d)" in text and "supported" in text and WITHIN in text
    # Iteration budget per seed, against the paper's (fixture) max_iter; the long schedule too.
    assert "of the paper's 7e6" in text and "4e6" not in text.split("## Iteration budget")[1].split("\n\n")[1]
    assert "| prostate | rrelu_nesterov | 2 | 3000 | 0.04% | 2.0 min | 30.70 dB | 0.8100 |" in text
    assert "| prostate | relu_sgd | 0 | 3000 |" in text
    assert "| prostate | long_schedule (rrelu_nesterov) | 0 | 4000000 | 57.14% |" in text
    assert "| prostate | long_schedule (relu_nesterov) | 0 | 4000000 | 57.14% |" in text
    # The long schedules: each one's gain, then the pairs judged per image.
    longs = text.split("### The long schedules")[1].split("\n## ")[0]
    assert "- relu_nesterov, 4000000 iterations (one run), over bicubic: PSNR +1.03 dB" in longs
    assert "RReLU beats ReLU, same solver, nesterov, at 4000000 iterations** " \
           "(rrelu_nesterov - relu_nesterov): PSNR -0.03 dB; per image: A ahead on 1 of 2" in longs
    # Only files that exist: fig3 of prostate, no fig4/fig6, no brain section (no results).
    assert "figures/prostate_fig3.png" in text and "prostate_fig4" not in text and "fig6" not in text
    assert "## brain" not in text and "## breast" in text and ONE_SEED in text


def test_report_without_paper_entry_or_results(tmp_path, fake_paper):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "mine.json").write_text(json.dumps(breast_result()))
    text = report(root=tmp_path, datasets=["mine"])
    assert "| mine | – | – | – | 36.50 |" in text and "paper's mean" not in text
    assert "make reproduce" in text
    assert "## Summary" not in report(root=tmp_path, datasets=["nothing"])


def test_report_reads_older_results_without_seeds(tmp_path, fake_paper):
    old = {"scale": 3, "methods": {"bicubic": method([30.0, 32.0], [0.8, 0.84]),
                                   "rrelu_nesterov": method([30.5, 32.5], [0.81, 0.85])}}
    for entry in old["methods"].values():
        for key in ("variant", "act", "solver", "seed", "iterations", "run"):
            entry.pop(key)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "prostate.json").write_text(json.dumps(old))
    text = report(root=tmp_path, datasets=["prostate"])
    assert "| rrelu_nesterov | 0 | – | 31.50 |" in text and ONE_SEED in text


def test_report_cli_prints_the_command(project, fake_paper, monkeypatch):
    import eval.report as mod
    out = project / "REPORT.md"
    real = mod.report
    monkeypatch.setattr(mod, "report", lambda command: real(root=project, datasets=["prostate"],
                                                           command=command))
    assert report_main(["--out", str(out), "--command", "make reproduce GRID=full SEEDS=3"]) == 0
    assert "make reproduce GRID=full SEEDS=3" in out.read_text()


# --- Figs. 3-4 -------------------------------------------------------------------------------

def curve_manifest(act, solver, seed, max_iter, offset=0.0):
    iters = [max_iter // 4 * k for k in range(1, 5)]
    tests = [{"iter": i, "psnr": 30 + offset + seed / 10 + k / 5, "ssim": 0.8 + k / 100, "loss": 1e-3}
             for k, i in enumerate(iters)]
    return {"dataset": "toy", "act": act, "solver": solver, "seed": seed, "tests": tests,
            "iterations_done": max_iter, "config": {"max_iter": max_iter},
            "bicubic": {"psnr": 30.2, "ssim": 0.79}}


def test_curve_panel_draws_seeds_mean_bicubic_and_the_papers_points(fake_paper):
    import matplotlib.pyplot as plt

    from tools.curves import plot_panel
    long_runs = [curve_manifest(act, "sgd", seed, 4000000, i) for i, act in enumerate(["relu", "rrelu"])
                 for seed in range(3)]
    fig, ax = plt.subplots()
    plot_panel(ax, long_runs, "act", "t")
    labels = [line.get_label() for line in ax.lines if not line.get_label().startswith("_")]
    assert labels == ["relu (mean of 3 seeds)", "rrelu (mean of 3 seeds)", "bicubic",
                      "paper's test points"]
    faint = [line for line in ax.lines if line.get_alpha() == 0.3]
    assert len(faint) == 6
    mean = next(line for line in ax.lines if line.get_label() == "rrelu (mean of 3 seeds)")
    assert list(mean.get_ydata()) == pytest.approx([31.1, 31.3, 31.5, 31.7])  # mean of the seeds
    vertical = [line for line in ax.lines if list(line.get_xdata()) in ([500000] * 2, [3500000] * 2)]
    assert len(vertical) == 2 and not ax.texts  # the fake paper samples at 5e5 and 3.5e6
    plt.close(fig)

    fig, ax = plt.subplots()
    plot_panel(ax, [curve_manifest("rrelu", "nesterov", 0, 3000)], "act", "t")
    # beyond the plotted range: said in the x label, where no legend or curve covers it
    assert ax.get_xlabel() == "iterations (the paper tested at 5e5, 3.5e6, 6.5e6)" and not ax.texts
    assert "rrelu (seed 0)" in [line.get_label() for line in ax.lines]
    plt.close(fig)


def test_curves_from_seed_directories_and_the_long_schedule(tmp_path, fake_paper):
    import cv2

    from tools.curves import main as curves_main
    for act, solver in (("rrelu", "nesterov"), ("relu", "sgd")):
        for seed in range(2):
            run = tmp_path / "runs" / "toy" / f"{act}_{solver}" / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "manifest.json").write_text(json.dumps(curve_manifest(act, solver, seed, 3000)))
    ref = tmp_path / "reference" / "toy"
    ref.mkdir(parents=True)
    (ref / "manifest.json").write_text(json.dumps(curve_manifest("rrelu", "nesterov", 0, 4000000)))
    none = str(tmp_path / "none")  # no long schedules: not the checkout's models/long/
    assert curves_main(["--runs", str(tmp_path / "runs"), "--reference", str(tmp_path / "reference"),
                        "--long", none, "--out", str(tmp_path / "fig")]) == 0
    for name in ("toy_fig3.png", "toy_fig4.png", "toy_long.png"):
        img = cv2.imread(str(tmp_path / "fig" / name))
        assert img is not None and img.shape[0] > 200 and img.std() > 10
    assert curves_main(["--runs", str(tmp_path / "runs"), "--reference", none, "--long", none,
                        "--out", str(tmp_path / "fig2"), "--metric", "ssim"]) == 0
    assert sorted(p.name for p in (tmp_path / "fig2").iterdir()) == ["toy_fig3_ssim.png",
                                                                      "toy_fig4_ssim.png"]


def test_long_schedules_of_one_factor_pairs_are_plotted_as_differences(tmp_path, fake_paper):
    import matplotlib.pyplot as plt

    from tools import curves
    longs = [curve_manifest("rrelu", "nesterov", 0, 100000), curve_manifest("relu", "nesterov", 0, 100000, 0.5),
             curve_manifest("relu", "sgd", 0, 100000, 0.2)]
    drawn = {}
    real = plt.subplots
    def spy(*a, **k):  # keep the axes to read what was drawn
        fig, axes = real(*a, **k)
        drawn["axes"] = axes
        return fig, axes
    curves.plt.subplots = spy
    try:
        path = curves.plot_long_pairs(longs, "toy", tmp_path)
    finally:
        curves.plt.subplots = real
    assert path.name == "toy_long_pairs.png" and path.stat().st_size > 0
    titles = [ax.get_title() for ax in drawn["axes"].flat if ax.get_visible()]
    assert titles == ["toy: RReLU beats ReLU, same solver, nesterov", "toy: NAG beats SGD, same activation, relu"]
    act = drawn["axes"].flat[0]
    curve = next(line for line in act.lines if line.get_label() == "rrelu_nesterov - relu_nesterov")
    assert list(curve.get_ydata()) == pytest.approx([-0.5] * 4)  # A below B by the offset
    assert curves.plot_long_pairs(longs[:1], "toy", tmp_path / "none") is None


def test_a_difference_below_the_printed_precision_is_no_difference():
    from eval.claims import NEGLIGIBLE, judge
    tiny = [-0.0010, -0.0012, -0.0011]  # seeds agree to 1e-4 dB: beyond 2 sd, but 0.00 as printed
    assert judge(tiny)["verdict"] == "contradicted"
    assert judge(tiny, resolution=0.005)["verdict"] == NEGLIGIBLE
    assert judge([0.5, 0.52, 0.51], resolution=0.005)["verdict"] == "supported"


def test_a_figure_panel_is_titled_by_what_it_holds(tmp_path):
    """The default grid (the paper's net and its baseline) differs in both factors at once: one
    panel of the two, not two panels of one curve each under titles that promise two."""
    from tools.curves import panels
    paper_grid = [curve_manifest("rrelu", "nesterov", 0, 3000), curve_manifest("relu", "sgd", 0, 3000)]
    (title, members, field), = panels(paper_grid, "solver", "act")
    assert title == "relu_sgd vs rrelu_nesterov" and field == "variant" and len(members) == 2
    solvers = paper_grid + [curve_manifest("rrelu", "adam", 0, 3000), curve_manifest("relu", "adam", 0, 3000)]
    titles = [t for t, _, _ in panels(solvers, "solver", "act")]
    assert titles == ["act relu: adam vs sgd", "act rrelu: adam vs nesterov"]
