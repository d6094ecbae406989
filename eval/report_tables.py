"""REPORT.md's tables from results/<dataset>.json: the paper's Fig. 5 means (core.paper) beside
ours, means and spreads over seeds, the per-seed values. Metric names, titles and formats come from
eval.metrics.METRICS; every paper number from core/paper_fig5.json."""
import re
import statistics

from core import paper
from eval import claims
from eval.claims import NET
from eval.metrics import METRICS
from eval.results import BICUBIC, is_long_method, long_method

DASH = "–"


def sci(n):
    """An iteration count as the paper writes it: 4000000 -> 4e6, 2500000 -> 2.5e6, 3000 -> 3e3."""
    n = float(n)
    if n == 0:
        return "0"
    exponent = len(str(int(abs(n)))) - 1
    mantissa = n / 10 ** exponent
    return f"{mantissa:g}e{exponent}" if exponent >= 3 else f"{n:g}"


def _seed_of(name, entry):
    if entry.get("seed") is not None:
        return int(entry["seed"])
    match = re.search(r"/seed(\d+)", name)
    return int(match.group(1)) if match else 0


def split(result):
    """(bicubic entry, {variant: {seed: entry}}, {variant: long-schedule entry}) of a results JSON
    (the long schedules: the paper's net first).

    Older results (methods named ``<act>_<solver>``, no ``variant``/``seed``) read as seed 0. A run
    whose variant and seed another entry already has (two directories of one run) is its own
    group, named as the method: nothing is dropped."""
    variants, longs = {}, {}
    for name, entry in result["methods"].items():
        if name == BICUBIC:
            continue
        if is_long_method(name):
            longs[entry.get("variant") or NET] = entry
            continue
        variant = entry.get("variant") or name.split("/")[0].split(" ")[0]
        seed = _seed_of(name, entry)
        if seed in variants.get(variant, {}):
            variant = name
        variants.setdefault(variant, {})[seed] = entry
    return result["methods"][BICUBIC], variants, {v: longs[v] for v in ordered(longs)}


def ordered(variants):
    """The paper's net first, then the other variants by name."""
    return sorted(variants, key=lambda v: (v != NET, v))


def mean_sd(values):
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def spread_text(metric, values, unit=False):
    """``28.50 ± 0.03 (n=3)``, or ``28.50 (n=1)`` for one seed."""
    mean, sd = mean_sd(values)
    u = f" {metric.unit}" if unit and metric.unit else ""
    sd_text = f" ± {metric.format(sd)}" if sd is not None else ""
    return f"{metric.format(mean)}{sd_text}{u} (n={len(values)})"


def signed(metric, value):
    """``+0.52`` (the metric's decimals, with its sign), or a dash for None."""
    return DASH if value is None else claims.signed(metric, value)


def paper_means(dataset):
    """{"bicubic": {metric: value}, "net": {...}, "entry"} from core.paper, or None (not one of
    the paper's data sets)."""
    entry = paper.dataset(dataset)
    if not entry:
        return None
    return {"bicubic": entry["bicubic"]["mean"], "net": entry[NET]["mean"], "entry": entry}


def dataset_title(dataset):
    entry = paper.dataset(dataset)
    if not entry:
        return dataset
    return f"{dataset} (Fig. 5{entry.get('panel', '')}, {entry.get('modality', '')})"


def long_column(variant, entry):
    """A long schedule's column title: ``long_schedule (rrelu_nesterov, 100000 its)``."""
    its = entry.get("iterations")
    return f"long schedule ({variant}{f', {its} its' if its else ''})"


def _cell(metric, value):
    return DASH if value is None else metric.format(value)


def summary_table(results, key):
    """One row per data set for metric ``key``: the paper's bicubic, net and gain beside ours (net
    mean ± sd over seeds), and the long schedule's gain when it was scored."""
    metric = METRICS[key]
    has_long = any(NET in split(r)[2] for r in results.values())
    head = ["data set", "paper: bicubic", f"paper: {NET}", "paper: gain", "ours: bicubic",
            f"ours: {NET} (mean ± sd, n seeds)", "ours: gain"]
    head += ["long schedule", "long schedule: gain"] if has_long else []
    lines = [f"| {' | '.join(head)} |", "|---" * len(head) + "|"]
    for dataset, result in results.items():
        bicubic, variants, longs = split(result)
        long_entry = longs.get(NET)
        ours_b = bicubic["mean"][key]
        p = paper_means(dataset)
        cells = [dataset_title(dataset)]
        if p:
            cells += [metric.format(p["bicubic"][key]), metric.format(p["net"][key]),
                      signed(metric, p["net"][key] - p["bicubic"][key])]
        else:
            cells += [DASH] * 3
        cells.append(metric.format(ours_b))
        if NET in variants:
            values = [e["mean"][key] for e in variants[NET].values()]
            cells += [spread_text(metric, values), signed(metric, mean_sd(values)[0] - ours_b)]
        else:
            cells += [DASH, DASH]
        if has_long:
            value = long_entry["mean"][key] if long_entry else None
            gain = None if value is None else value - ours_b
            cells += [_cell(metric, value), signed(metric, gain)]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def fig5_table(dataset, result, key):
    """The paper's Fig. 5 for metric ``key``: one row per test image, the mean and the gain over
    bicubic; a column for bicubic, each variant (mean over its seeds) and the long schedule; then
    the paper's means and gain in the same columns (bicubic and the paper's net)."""
    metric = METRICS[key]
    bicubic, variants, longs = split(result)
    columns = [(BICUBIC, {0: bicubic})] + [(v, variants[v]) for v in ordered(variants)]
    columns += [(long_column(v, e), {0: e}) for v, e in longs.items()]
    head = ["image"] + [name if len(seeds) == 1 else f"{name} (mean of {len(seeds)} seeds)"
                        for name, seeds in columns]
    lines = [f"| {' | '.join(head)} |", "|---" * len(head) + "|"]
    names = [row["name"] for row in bicubic["images"]]
    for i, name in enumerate(names):
        cells = [metric.format(statistics.fmean(e["images"][i][key] for e in seeds.values()))
                 for _, seeds in columns]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    means = [mean_sd(e["mean"][key] for e in seeds.values()) for _, seeds in columns]
    mean_name = "**mean**" if patients_of(result) is None else f"**mean over {len(names)} images**"
    lines.append(f"| {mean_name} | " + " | ".join(
        f"**{metric.format(m)}**" + (f" ± {metric.format(sd)}" if sd is not None else "")
        for m, sd in means) + " |")
    lines.append("| gain over bicubic | " + " | ".join(
        [DASH] + [signed(metric, m - means[0][0]) for m, _ in means[1:]]) + " |")
    p = paper_means(dataset)
    if p:
        by_column = {BICUBIC: p["bicubic"][key], NET: p["net"][key]}
        lines.append("| paper's mean (Fig. 5) | " + " | ".join(
            _cell(metric, by_column.get(name)) for name, _ in columns) + " |")
        gain = p["net"][key] - p["bicubic"][key]
        lines.append("| paper's gain over bicubic | " + " | ".join(
            signed(metric, gain) if name == NET else DASH for name, _ in columns) + " |")
    return "\n".join(lines)


def paper_images_table(dataset):
    """The paper's per-image values (its Fig. 5 row order) where the transcription has them, or
    None. They are listed apart: our test slices need not be the paper's."""
    p = paper_means(dataset)
    if not p:
        return None
    rows = {}
    for key in METRICS:
        for method in (BICUBIC, NET):
            values = p["entry"][method].get(key)
            if values:
                rows[(key, method)] = values
    if not rows:
        return None
    width = max(len(v) for v in rows.values())
    head = ["paper (Fig. 5)"] + [f"image {i + 1}" for i in range(width)]
    lines = [f"| {' | '.join(head)} |", "|---" * len(head) + "|"]
    for (key, method), values in rows.items():
        cells = [_cell(METRICS[key], v) for v in values] + [DASH] * (width - len(values))
        lines.append(f"| {method} {METRICS[key].title} | {' | '.join(cells)} |")
    return "\n".join(lines)


def seeds_table(result):
    """Each run's own values (one row per variant and seed), and each variant's mean ± sd."""
    bicubic, variants, longs = split(result)
    head = ["run", "seed", "iterations"] + [m.title + (f" ({m.unit})" if m.unit else "")
                                            for m in METRICS.values()]
    head += [f"{m.title} - bicubic" for m in METRICS.values()]
    lines = [f"| {' | '.join(head)} |", "|---" * len(head) + "|"]
    groups = [(v, variants[v]) for v in ordered(variants)]
    groups += [(long_method(v), {e.get("seed") or 0: e}) for v, e in longs.items()]
    for variant, seeds in groups:
        for seed in sorted(seeds):
            e = seeds[seed]
            its = e.get("iterations")
            cells = [variant, str(seed), DASH if its is None else str(its)]
            cells += [m.format(e["mean"][k]) for k, m in METRICS.items()]
            cells += [signed(m, e["mean"][k] - bicubic["mean"][k]) for k, m in METRICS.items()]
            lines.append(f"| {' | '.join(cells)} |")
        if len(seeds) > 1:
            cells = [f"**{variant}**", "mean ± sd", DASH]
            cells += [spread_text(m, [e["mean"][k] for e in seeds.values()])
                      for k, m in METRICS.items()]
            cells += [spread_text(m, [e["mean"][k] - bicubic["mean"][k] for e in seeds.values()])
                      for k, m in METRICS.items()]
            lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def patients_of(result):
    """The test patients of a results JSON scored per patient (eval.score.patient_summary), in
    order; None for a set without patients (the default data sets)."""
    patients = result["methods"][BICUBIC].get("patients")
    return None if patients is None else [e["patient"] for e in patients["each"]]


def patient_table(result, key):
    """One row per test patient for metric ``key``: its test images and each method's mean over
    them (a variant's averaged over its seeds); then the mean over patients ± sd across them, the
    patient count, and each method's gain over bicubic in that mean."""
    metric = METRICS[key]
    bicubic, variants, longs = split(result)
    columns = [(BICUBIC, {0: bicubic})] + [(v, variants[v]) for v in ordered(variants)]
    columns += [(long_column(v, e), {0: e}) for v, e in longs.items()]
    head = ["patient", "images"] + [name if len(seeds) == 1 else f"{name} (mean of {len(seeds)} seeds)"
                                    for name, seeds in columns]
    lines = [f"| {' | '.join(head)} |", "|---" * len(head) + "|"]
    each = bicubic["patients"]["each"]
    per_column = [[statistics.fmean(e["patients"]["each"][i][key] for e in seeds.values())
                   for i in range(len(each))] for _, seeds in columns]
    for i, e in enumerate(each):
        cells = [metric.format(values[i]) for values in per_column]
        lines.append(f"| {e['patient']} | {e['images']} | {' | '.join(cells)} |")
    means = [mean_sd(values) for values in per_column]
    lines.append(f"| **mean over {len(each)} patient{'s' if len(each) != 1 else ''}** "
                 f"(± sd across them) | {sum(e['images'] for e in each)} | " + " | ".join(
                     f"**{metric.format(m)}**" + (f" ± {metric.format(sd)}" if sd is not None else "")
                     for m, sd in means) + " |")
    lines.append("| gain over bicubic | | " + " | ".join(
        [DASH] + [signed(metric, m - means[0][0]) for m, _ in means[1:]]) + " |")
    return "\n".join(lines)
