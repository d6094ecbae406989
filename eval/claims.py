"""The paper's claims, judged on our seeds: paired differences (same seed) against their spread.

A claim "A beats B" is judged on d_k = A_k - B_k over the seeds k both were trained with (B is
bicubic, the same for every seed, for "the net beats bicubic"). See :data:`RULE`.
"""
import statistics

from core.names import BASELINE as PAPER_BASELINE
from core.names import PAPER_NET, variant
from eval.metrics import METRICS

SPREAD = 2.0  # a mean difference must exceed SPREAD sample standard deviations of the d_k
SUPPORTED, CONTRADICTED = "supported", "contradicted"
WITHIN = "within the spread: not supported"
ONE_SEED = "one seed: the spread is unknown (SEEDS=3 judges it)"
NO_SEED = "not judged: no seed in common"
NEGLIGIBLE = "no difference at the reported precision"

RULE = (f"Each claim \"A beats B\" is judged per metric on the paired differences d_k = A_k - B_k "
        f"over the seeds k both were trained with (same seed: same initial weights, RReLU draws "
        f"and patch order; bicubic is one number for every seed). With n >= 2 seeds: "
        f"**{SUPPORTED}** when mean(d) > 0 and mean(d) > {SPREAD:g} x sd(d) (sample standard "
        f"deviation), **{CONTRADICTED}** when mean(d) < 0 and |mean(d)| > {SPREAD:g} x sd(d), else "
        f"**{WITHIN}**; a |mean(d)| below half the last printed digit (0.005 dB, 0.00005 SSIM) is "
        f"**{NEGLIGIBLE}**, however small the spread. With one seed the single difference is given and nothing is judged "
        f"(\"{ONE_SEED}\"): no claim rests on a single run.")


def judge(diffs, resolution=0.0):
    """{"n", "mean", "sd", "verdict"} of paired differences (sd None below two seeds); a mean
    below ``resolution`` in size is no difference, whatever the spread (seeds can agree to 1e-4 dB)."""
    diffs = [float(d) for d in diffs]
    n = len(diffs)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "verdict": NO_SEED}
    mean = statistics.fmean(diffs)
    if n == 1:
        return {"n": 1, "mean": mean, "sd": None, "verdict": ONE_SEED}
    sd = statistics.stdev(diffs)
    if abs(mean) < resolution:
        verdict = NEGLIGIBLE
    elif mean > 0 and mean > SPREAD * sd:
        verdict = SUPPORTED
    elif mean < 0 and -mean > SPREAD * sd:
        verdict = CONTRADICTED
    else:
        verdict = WITHIN
    return {"n": n, "mean": mean, "sd": sd, "verdict": verdict}


def paired(a, b):
    """d_k = a[k] - b[k] over the seeds both dicts hold ({seed: value}), in seed order; a number
    for ``b`` is the same for every seed (bicubic)."""
    if isinstance(b, dict):
        return [(k, a[k] - b[k]) for k in sorted(set(a) & set(b))]
    return [(k, a[k] - b) for k in sorted(a)]


def signed(metric, value):
    return ("+" if value >= 0 else "") + metric.format(value)


def describe(metric, judged, seeds):
    """``PSNR +0.52 ± 0.03 dB (3 seeds): supported``."""
    unit = f" {metric.unit}" if metric.unit else ""
    if judged["n"] == 0:
        return f"{metric.title}: {judged['verdict']}"
    if judged["n"] == 1:
        return (f"{metric.title} {signed(metric, judged['mean'])}{unit} (seed {seeds[0]}): "
                f"{judged['verdict']}")
    return (f"{metric.title} {signed(metric, judged['mean'])} ± {metric.format(judged['sd'])}"
            f"{unit} (mean ± sd of {judged['n']} seeds): {judged['verdict']}")


def claim_line(title, a, b, per_metric_a, per_metric_b):
    """One Markdown bullet: ``title`` (a - b), every metric's verdict.

    ``per_metric_a``/``_b``: {metric: {seed: value}} (or {metric: number} for bicubic)."""
    parts = []
    for key, metric in METRICS.items():
        pairs = paired(per_metric_a[key], per_metric_b[key])
        resolution = 0.5 * 10.0 ** -metric.decimals  # half the last digit the tables print
        parts.append(describe(metric, judge([d for _, d in pairs], resolution),
                              [k for k, _ in pairs]))
    return f"- **{title}** ({a} - {b}): " + "; ".join(parts) + "."


def seed_values(variants, variant):
    """{metric: {seed: value}} of one variant (``variants``: {variant: {seed: entry}})."""
    return {k: {seed: e["mean"][k] for seed, e in variants[variant].items()} for k in METRICS}


NET, BASELINE = variant(*PAPER_NET), variant(*PAPER_BASELINE)  # as the grid names them


def claim_lines(variants, bicubic_mean):
    """The claim bullets of one data set.

    ``variants``: {variant "<act>_<solver>": {seed: method entry with "mean"}} of the
    default-schedule runs; ``bicubic_mean``: {metric: value}."""
    lines = []
    if NET in variants:
        lines.append(claim_line("The net beats bicubic", NET, "bicubic",
                                seed_values(variants, NET), bicubic_mean))
    else:
        lines.append(f"- **The net beats bicubic**: not judged: no {NET} run.")
    unjudged = False
    for title, better, worse, fixed in (("RReLU beats ReLU", "rrelu", "relu", "solver"),
                                        ("NAG beats SGD", "nesterov", "sgd", "act")):
        pairs = []
        for variant in sorted(variants):
            act, _, solver = variant.partition("_")
            if fixed == "solver" and act == better and f"{worse}_{solver}" in variants:
                pairs.append((variant, f"{worse}_{solver}", f"same solver, {solver}"))
            if fixed == "act" and solver == better and f"{act}_{worse}" in variants:
                pairs.append((variant, f"{act}_{worse}", f"same activation, {act}"))
        for a, b, note in pairs:
            lines.append(claim_line(f"{title}, {note}", a, b, seed_values(variants, a),
                                    seed_values(variants, b)))
        if not pairs:
            unjudged = True
            lines.append(f"- **{title}**: cannot be judged: no two runs that differ only in it "
                         f"(GRID=full trains relu/rrelu x sgd/nesterov).")
    if unjudged and NET in variants and BASELINE in variants:
        lines.append(claim_line("The paper's net beats its baseline (RReLU+NAG vs ReLU+SGD)",
                                NET, BASELINE, seed_values(variants, NET),
                                seed_values(variants, BASELINE)))
    return lines
