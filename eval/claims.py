"""The paper's claims, and every other one-factor comparison, judged on our seeds and images.

A claim "A beats B" is judged on d_k = A_k - B_k over the seeds k both were trained with (B is
bicubic, the same for every seed, for "the net beats bicubic"): :data:`RULE`; and per test image,
paired: :data:`IMAGE_RULE`. Every two variants that differ in the activation alone or the solver
alone are compared (:func:`one_factor_pairs`); the long schedules, one run each, per image. On a
set of two or more test patients (a cohort) the paired test is over patients: :data:`PATIENT_RULE`.
"""
import math
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
IMAGES_DISAGREE = "not supported (sign test)"

RULE = (f"Each claim \"A beats B\" is judged per metric on the paired differences d_k = A_k - B_k "
        f"over the seeds k both were trained with (same seed: same initial weights, RReLU draws "
        f"and patch order; bicubic is one number for every seed). With n >= 2 seeds: "
        f"**{SUPPORTED}** when mean(d) > 0 and mean(d) > {SPREAD:g} x sd(d) (sample standard "
        f"deviation), **{CONTRADICTED}** when mean(d) < 0 and |mean(d)| > {SPREAD:g} x sd(d), else "
        f"**{WITHIN}**; a |mean(d)| below half the last printed digit (0.005 dB, 0.00005 SSIM) is "
        f"**{NEGLIGIBLE}**, however small the spread. With one seed the single difference is given and nothing is judged "
        f"(\"{ONE_SEED}\"): no claim rests on a single run.")


IMAGE_P = 0.05  # the sign test's two-sided level for a per-image verdict
IMAGE_RULE = (f"Per image, the same pair is compared on each test image (each value averaged "
              f"over the seeds both were trained with): the images on which A is ahead and "
              f"behind, the mean ± sd of the per-image differences, and a two-sided exact sign "
              f"test. **{SUPPORTED}** (or **{CONTRADICTED}**) when p < {IMAGE_P:g} and the mean "
              f"agrees in sign; a mean below half the last printed digit is **{NEGLIGIBLE}**. A "
              f"per-image verdict speaks for these trained weights on these test images; whether "
              f"training does it again is what the seeds judge.")


MIN_PATIENTS = 2  # below this the paired test stays per image (one patient's images)
PATIENT_RULE = (f"On a data set of patients (a cohort, whose manifest names each test image's "
                f"patient) with {MIN_PATIENTS} or more test patients, the paired test is per "
                f"patient instead of per image: each value is the patient's mean over its test "
                f"images (averaged over the seeds), and the sign test counts patients, since the "
                f"slices of one patient are not independent samples. With fewer than 6 patients "
                f"no outcome reaches p < {IMAGE_P:g} (the smallest two-sided p of n patients is "
                f"2/2^n), so such a cohort supports no claim per patient. With one test patient the "
                f"test stays per image, of that patient's images. The judgement over seeds uses "
                f"each run's mean over all test images, as for the default data sets.")


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


NET, BASELINE = variant(*PAPER_NET), variant(*PAPER_BASELINE)  # as the grid names them

# The paper's two claims, each the better and the worse value of one factor, and the title under
# which a pair that differs in it alone is judged
PAPER_CLAIMS = {"act": ("rrelu", "relu", "RReLU beats ReLU"),
                "solver": ("nesterov", "sgd", "NAG beats SGD")}
FIXED = {"act": "same solver", "solver": "same activation"}


def factors(name):
    """{"act", "solver"} of a variant name ``<act>_<solver>`` (activations have no ``_``)."""
    act, _, solver = name.partition("_")
    return {"act": act, "solver": solver}


def ordered_pair(factor, x, y):
    """(A, B) of two values of one factor, judged as "A beats B": the paper's claim where it is
    one; else a value the paper did not use against the paper's (is the newcomer better?); else by
    name."""
    better, worse, _ = PAPER_CLAIMS[factor]
    if {x, y} == {better, worse}:
        return better, worse
    paper_values = {better, worse}
    if (x in paper_values) != (y in paper_values):
        return (y, x) if x in paper_values else (x, y)
    return tuple(sorted((x, y)))


def one_factor_pairs(names):
    """[(title, a, b)]: every two variants of ``names`` that differ in the activation alone or in
    the solver alone, a first where "a beats b" is the claim (:func:`ordered_pair`); the paper's
    two claims first."""
    pairs = []
    names = sorted(names)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            fx, fy = factors(x), factors(y)
            differ = [f for f in ("act", "solver") if fx[f] != fy[f]]
            if len(differ) != 1:
                continue
            factor = differ[0]
            other = "solver" if factor == "act" else "act"
            a_value, b_value = ordered_pair(factor, fx[factor], fy[factor])
            a, b = (x, y) if fx[factor] == a_value else (y, x)
            better, worse, paper_title = PAPER_CLAIMS[factor]
            claim = (paper_title if (a_value, b_value) == (better, worse)
                     else f"{a_value} beats {b_value}")
            not_paper = (a_value, b_value) != (better, worse)
            fixed_not_paper = fx[other] not in PAPER_CLAIMS[other][:2]
            pairs.append((not_paper, fixed_not_paper, factor, f"{claim}, {FIXED[factor]}, {fx[other]}",
                          a, b))
    return [(title, a, b) for *_, title, a, b in sorted(pairs, key=lambda p: p[:3])]


def image_values(entries, seeds):
    """{metric: [per-image value averaged over ``seeds``]} of one variant's {seed: entry}."""
    return {k: [statistics.fmean(entries[s]["images"][i][k] for s in seeds)
                for i in range(len(entries[seeds[0]]["images"]))] for k in METRICS}


def patient_values(entries, seeds):
    """{metric: [per-patient mean averaged over ``seeds``]} of one variant's {seed: entry}
    (eval.score.patient_summary's "each": every entry of one data set lists its patients alike)."""
    return {k: [statistics.fmean(entries[s]["patients"]["each"][i][k] for s in seeds)
                for i in range(entries[seeds[0]]["patients"]["n"])] for k in METRICS}


def paired_unit(entries):
    """"patient" when the paired test is over patients (entries scored per patient, at least
    MIN_PATIENTS of them: :data:`PATIENT_RULE`), else "image"."""
    patients = next(iter(entries.values())).get("patients")
    return "patient" if patients and patients["n"] >= MIN_PATIENTS else "image"


def sign_test(wins, losses):
    """Two-sided exact sign test p-value of ``wins`` against ``losses`` (ties left out)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(0, min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def judge_images(diffs, resolution=0.0):
    """{"n", "wins", "losses", "mean", "sd", "p", "verdict"} of per-image paired differences: the
    images favouring A and B, and the sign test over them (:data:`IMAGE_RULE`)."""
    diffs = [float(d) for d in diffs]
    wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    mean = statistics.fmean(diffs) if diffs else 0.0
    sd = statistics.stdev(diffs) if len(diffs) > 1 else None
    p = sign_test(wins, losses)
    if abs(mean) < resolution:
        verdict = NEGLIGIBLE
    elif p < IMAGE_P and wins > losses and mean > 0:
        verdict = SUPPORTED
    elif p < IMAGE_P and losses > wins and mean < 0:
        verdict = CONTRADICTED
    else:
        verdict = IMAGES_DISAGREE
    return {"n": len(diffs), "wins": wins, "losses": losses, "mean": mean, "sd": sd, "p": p,
            "verdict": verdict}


def describe_images(metric, judged, per="image"):
    """``per image: A ahead on 9 of 12 (p=0.15), +0.02 ± 0.03 dB: not supported ...``; ``per``
    "patient": ``per patient: A ahead on 3 of 4 patients ...``."""
    unit = f" {metric.unit}" if metric.unit else ""
    sd = f" ± {metric.format(judged['sd'])}" if judged["sd"] is not None else ""
    ties = judged["n"] - judged["wins"] - judged["losses"]
    tie_text = f", {ties} tied" if ties else ""
    counted = " patients" if per == "patient" else ""
    return (f"per {per}: A ahead on {judged['wins']} of {judged['n']}{counted}{tie_text} (sign test "
            f"p={judged['p']:.2g}), {signed(metric, judged['mean'])}{sd}{unit}: {judged['verdict']}")


def pair_line(title, a, b, a_entries, b_entries, over_seeds=True):
    """One Markdown bullet judging "a beats b" over the seeds both have, and per image (per
    patient on a set of patients: :data:`PATIENT_RULE`).

    ``a_entries``/``b_entries``: {seed: method entry with "mean" and "images"}; a bicubic entry
    is given as {None: entry}, the same for every seed. ``over_seeds`` False: one run each by
    design (the long schedules), so only the difference of the means is given beside the images."""
    if None in b_entries:
        seeds = sorted(a_entries)
        b_entries = {s: b_entries[None] for s in seeds}
    else:
        seeds = sorted(set(a_entries) & set(b_entries))
    if not seeds:
        return f"- **{title}** ({a} - {b}): {NO_SEED}."
    parts = []
    per = paired_unit(a_entries)
    values = patient_values if per == "patient" else image_values
    a_images, b_images = values(a_entries, seeds), values(b_entries, seeds)
    for key, metric in METRICS.items():
        resolution = 0.5 * 10.0 ** -metric.decimals  # half the last digit the tables print
        diffs = [a_entries[s]["mean"][key] - b_entries[s]["mean"][key] for s in seeds]
        per_image = [x - y for x, y in zip(a_images[key], b_images[key])]
        means = (describe(metric, judge(diffs, resolution), seeds) if over_seeds else
                 f"{metric.title} {signed(metric, diffs[0])}{f' {metric.unit}' if metric.unit else ''}")
        parts.append(means + "; " + describe_images(metric, judge_images(per_image, resolution), per))
    return f"- **{title}** ({a} - {b}): " + ". ".join(parts) + "."


def claim_lines(variants, bicubic):
    """The claim bullets of one data set: the net against bicubic, then every pair of variants
    that differ in one factor (:func:`one_factor_pairs`).

    ``variants``: {variant "<act>_<solver>": {seed: method entry}} of the default-schedule runs;
    ``bicubic``: the bicubic method entry."""
    lines = []
    if NET in variants:
        lines.append(pair_line("The net beats bicubic", NET, "bicubic", variants[NET], {None: bicubic}))
    else:
        lines.append(f"- **The net beats bicubic**: not judged: no {NET} run.")
    pairs = one_factor_pairs(variants)
    for title, a, b in pairs:
        lines.append(pair_line(title, a, b, variants[a], variants[b]))
    unjudged = [title for factor, (better, worse, title) in PAPER_CLAIMS.items()
                if not any({factors(a)[factor], factors(b)[factor]} == {better, worse}
                           for _, a, b in pairs)]
    lines += [f"- **{title}**: cannot be judged: no two runs that differ only in it "
              f"(GRID=full trains relu/rrelu x sgd/nesterov)." for title in unjudged]
    if len(unjudged) == len(PAPER_CLAIMS) and NET in variants and BASELINE in variants:
        lines.append(pair_line("The paper's net beats its baseline (RReLU+NAG vs ReLU+SGD)",
                               NET, BASELINE, variants[NET], variants[BASELINE]))
    return lines


def long_claim_lines(longs):
    """The claim bullets of the long schedules (one run each, so judged per image): every pair
    that differs in one factor, then the paper's net against its baseline (both factors at once);
    a pair of unequal lengths or seeds is named, not judged. ``longs``: {variant: method entry}."""
    pairs = one_factor_pairs(longs)
    if NET in longs and BASELINE in longs:
        pairs.append(("The paper's net beats its baseline (RReLU+NAG vs ReLU+SGD)", NET, BASELINE))
    return [long_pair_line(title, a, b, longs[a], longs[b]) for title, a, b in pairs]


def long_pair_line(title, a, b, entry_a, entry_b):
    """One long-schedule bullet: judged per image where both ran as long with one seed."""
    its_a, its_b = entry_a.get("iterations"), entry_b.get("iterations")
    if its_a != its_b:
        return (f"- **{title}** ({a} - {b}): not judged: {a} has {its_a} iterations, {b} {its_b} "
                f"(`make reference ACT= SOLVER=` continues the shorter).")
    seed_a, seed_b = entry_a.get("seed") or 0, entry_b.get("seed") or 0
    if seed_a != seed_b:
        return f"- **{title}** ({a} - {b}): not judged: seeds {seed_a} and {seed_b}."
    return pair_line(f"{title}, at {its_a} iterations", a, b, {seed_a: entry_a}, {seed_b: entry_b},
                     over_seeds=False)
