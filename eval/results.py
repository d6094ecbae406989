"""Scoring runs against bicubic, and the tables that show it (JSON, CSV, Fig. 5-style Markdown).

Methods are named by :func:`core.run_files.run_label` (``rrelu_nesterov/seed0``); the long-schedule
reference weights (``models/reference/<dataset>/``) are ``long_schedule``, the other variants'
long schedules (``models/long/<dataset>/<variant>/``) ``long_schedule/<variant>``. Two runs that would get
the same name are told apart by their directory: no run is ever dropped. Every method entry carries
``variant``, ``act``, ``solver``, ``seed``, ``iterations`` and ``run`` (None for bicubic).
"""
import csv
import io
import json
from pathlib import Path

from core.atomic import json_text
from core.config import DEFAULT, ROOT
from core.errors import DataError
from core.outputs import PRODUCER
from core.names import PAPER_NET, manifest_variant, variant
from core.run_files import LONG_RUN, LONG_VARIANTS, final_snapshot, is_reference, long_dirs, read_manifest, run_label
from eval.metrics import METRICS
from eval.score import score_method
from inference.runs import display_path, run_scale

LONG_SCHEDULE = "long_schedule"  # the method name of models/reference/<dataset>/


def long_method(variant_name):
    """The method name of a variant's long schedule: ``long_schedule`` for the paper's net (the
    reference weights), ``long_schedule/<variant>`` for the packs of models/long/."""
    return LONG_SCHEDULE if variant_name == variant(*PAPER_NET) else f"{LONG_SCHEDULE}/{variant_name}"


def is_long_method(name):
    return name == LONG_SCHEDULE or name.startswith(f"{LONG_SCHEDULE}/")
BICUBIC = "bicubic"


def run_model(run_dir):
    """(variant ``<act>_<solver>``, deploy prototxt, final caffemodel) of a run directory."""
    manifest, deploy, caffemodel = final_snapshot(run_dir)
    return manifest_variant(manifest), str(deploy), str(caffemodel)


def run_info(run_dir):
    """What a table needs of a trained run: its label, variant, seed, iterations, files, scale."""
    manifest, deploy, caffemodel = final_snapshot(run_dir)
    last = manifest["snapshots"][-1]
    return {"label": run_label(manifest), "variant": manifest_variant(manifest),
            "act": manifest["act"], "solver": manifest["solver"],
            "seed": int(manifest.get("seed", 0)),
            "iterations": last.get("iter", manifest.get("iterations_done")),
            "run": display_path(run_dir), "deploy": str(deploy), "caffemodel": str(caffemodel),
            "scale": run_scale(run_dir, manifest), "dir": Path(run_dir)}


def find_run_dirs(dataset, root=ROOT):
    """Every run directory of a data set that has a manifest: ``runs/<dataset>/<variant>/seed<k>/``
    and the older ``runs/<dataset>/<variant>/``; sorted by variant, seed, then path."""
    return run_dirs_under(Path(root) / "runs" / dataset)


def run_dirs_under(base):
    """:func:`find_run_dirs` of one data set's folder of runs, ``base``."""
    base = Path(base)
    found = []
    for pattern in ("*/seed*/manifest.json", "*/manifest.json"):
        for path in base.glob(pattern):
            if path.relative_to(base).parts[0] in (LONG_RUN, LONG_VARIANTS):  # make reference's runs
                continue
            manifest = read_manifest(path.parent)
            if manifest and "act" in manifest and "solver" in manifest:
                found.append(((manifest_variant(manifest),
                               int(manifest.get("seed", 0)), str(path.parent)), path.parent))
    return [d for _, d in sorted(found)]


def dataset_runs(dataset, root=ROOT):
    """Run directories of a data set that have a final snapshot (:func:`find_run_dirs` order)."""
    return [d for d in find_run_dirs(dataset, root) if (read_manifest(d) or {}).get("snapshots")]


def name_runs(run_dirs, root=ROOT):
    """{method name: run info} for run directories, in their order: ``run_label`` (or
    ``long_schedule`` for reference weights); names two runs share get the run's directory added,
    ``rrelu_nesterov/seed0 (runs/x/...)``. The same directory given twice is scored once."""
    infos, seen = [], set()
    for run_dir in run_dirs:
        key = Path(run_dir).resolve()
        if key not in seen:
            seen.add(key)
            info = run_info(run_dir)
            if is_reference(run_dir, root):
                info["label"] = LONG_SCHEDULE
            infos.append(info)
    counts = {}
    for info in infos:
        counts[info["label"]] = counts.get(info["label"], 0) + 1
    return {(i["label"] if counts[i["label"]] == 1 else f"{i['label']} ({i['run']})"): i
            for i in infos}


def dataset_methods(dataset, root=ROOT):
    """{name: run info} of every trained run of a data set, then its long schedules (the
    reference weights, then the other variants' packs: :func:`long_method` names them)."""
    named = name_runs(dataset_runs(dataset, root), root)
    for variant_name, folder in long_dirs(dataset, root).items():
        name = long_method(variant_name)
        named[name] = dict(run_info(folder), label=name)
    return named


def common_scale(infos, requested=None):
    """The one scale of the runs (``requested``, else the default, when there are none).
    DataError, one line, for runs of different scales or a ``requested`` scale they contradict."""
    scales = {}
    for name, info in infos.items():
        scales.setdefault(info["scale"], []).append(name)
    if len(scales) > 1:
        listed = "; ".join(f"x{s}: {', '.join(names)}" for s, names in sorted(scales.items()))
        raise DataError(f"the runs were trained for different scales ({listed}): "
                        "evaluate each scale separately")
    if scales:
        (scale,) = scales
        if requested is not None and requested != scale:
            raise DataError(f"--scale {requested} contradicts the runs, trained for x{scale} "
                            f"({', '.join(scales[scale])}): leave --scale out")
        return scale
    return DEFAULT.scale if requested is None else requested


def entry(info):
    """The identifying fields of a method entry."""
    keys = ("variant", "act", "solver", "seed", "iterations", "run")
    return {k: (info[k] if info else None) for k in keys}


def evaluate(hr_images, runs, scale=None, engine="caffe", border="replicate", patients=None):
    """{"scale", "border", "frame", "methods"}: bicubic first, then each run's final weights.

    ``runs``: run directories (named by :func:`name_runs`) or {name: run info}. ``scale`` and the
    scoring border (``scale`` px shaved per side, as the trainer's test) come from the runs'
    manifests; a ``scale`` given must agree (DataError otherwise, before anything is scored).
    ``border`` is the net's 6-px frame fill (inference.net.SRNet). ``patients`` ({image name:
    patient}, core.datasets.image_patients): each method is also aggregated per patient."""
    named = runs if isinstance(runs, dict) else name_runs(runs)
    scale = common_scale(named, scale)
    from inference.net import SRNet  # imports Caffe: only once the runs are known good

    methods = {BICUBIC: entry(None) | score_method(hr_images, lambda up: up, scale=scale,
                                                   patients=patients)}
    for name, info in named.items():
        net = SRNet(info["deploy"], info["caffemodel"], engine=engine, border=border)
        methods[name] = entry(info) | score_method(hr_images, net, scale=scale, patients=patients) | {
            "caffemodel": display_path(info["caffemodel"])}
    return {"scale": scale, "border": scale, "frame": border, "methods": methods}


def csv_text(result):
    """One row per method and image (and its mean), a column per metric (eval.metrics.METRICS).
    A set of patients (its methods have ``"patients"``) adds a patient column, and after the mean
    over images a row per patient (its mean), the mean over patients and their sd."""
    out = io.StringIO()
    writer = csv.writer(out)
    by_patient = has_patients(result)
    writer.writerow(["method", "variant", "seed", "image", *(["patient"] if by_patient else []),
                     *METRICS])
    for method, r in result["methods"].items():
        seed = "" if r.get("seed") is None else r["seed"]
        rows = [(row["name"], row.get("patient"), row) for row in r["images"]]
        rows.append(("mean", f"{len(r['images'])} images" if by_patient else None, r["mean"]))
        if by_patient:
            p = r["patients"]
            rows += [("patient mean", e["patient"], e) for e in p["each"]]
            rows += [("mean over patients", f"{p['n']} patients", p["mean"]),
                     ("sd over patients", f"{p['n']} patients", p["sd"])]
        for name, patient, values in rows:
            cells = [("" if values[k] is None else f"{values[k]:.{m.decimals + 2}f}")
                     for k, m in METRICS.items()]
            writer.writerow([method, r.get("variant") or method, seed, name,
                             *([patient] if by_patient else []), *cells])
    return out.getvalue()


def has_patients(result):
    """True when ``result`` was scored per patient (a cohort set: core.datasets.image_patients)."""
    return "patients" in result["methods"][BICUBIC]


# The mark of eval's tables (FORCE, core.outputs): the JSON's "producer", the Markdown's last
# line; a CSV has no place for a note that its readers skip, so its header row is its mark.
TABLES_MARK = f"{PRODUCER} eval"
MD_MARK = f"<!-- {TABLES_MARK} -->"
CSV_HEAD = "method,variant,seed,image,"


def tables_text(result, title):
    """{"json", "csv", "md"}: the texts of the three tables of ``result``, each with its mark."""
    return {"json": json_text({"producer": TABLES_MARK, **result}), "csv": csv_text(result),
            "md": f"{markdown_table(result, title)}\n{MD_MARK}\n"}


def table_refusal(kind, path):
    """None when ``path`` is a table of ``kind`` ("json", "csv", "md") that eval wrote (its mark);
    else why not, a clause (core.outputs.check_replace's ``own``)."""
    try:
        text = Path(path).read_text()
        if kind == "json":
            table = json.loads(text)
            marked = isinstance(table, dict) and table.get("producer") == TABLES_MARK
        elif kind == "csv":
            marked = text.startswith(CSV_HEAD)
        else:
            marked = text.rstrip().endswith(MD_MARK)
    except (OSError, ValueError):  # unreadable, not text, not JSON: not a table of ours
        marked = False
    if marked:
        return None
    where = {"json": f'"producer": "{TABLES_MARK}"', "csv": f"the header {CSV_HEAD}...",
             "md": f"the last line {MD_MARK}"}[kind]
    return f"it is not a table that eval wrote (no {where})"


def markdown_table(result, title):
    """Fig. 5 layout: one row per test image (and the mean), each metric per method; a set of
    patients adds the mean over patients ± sd across them (n patients) and a table per patient."""
    methods = list(result["methods"])
    head = "| image | " + " | ".join(f"{name} {m.title}" for name in methods
                                     for m in METRICS.values()) + " |"
    rule = "|---" * (1 + len(METRICS) * len(methods)) + "|"
    names = [row["name"] for row in result["methods"][BICUBIC]["images"]]
    by_patient = has_patients(result)
    mean_name = f"**mean over {len(names)} images**" if by_patient else "**mean**"
    lines = [f"### {title} (x{result['scale']})", "", head, rule]
    for i, name in enumerate(names + [mean_name]):
        cells = []
        for method in methods:
            r = result["methods"][method]
            row = r["mean"] if i == len(names) else r["images"][i]
            cells += [m.format(row[k]) for k, m in METRICS.items()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if by_patient:
        lines += [patients_row(result, methods), "", patient_table(result, methods)]
    return "\n".join(lines) + "\n"


def mean_sd_text(metric, mean, sd):
    """``30.12 ± 0.45``, or the mean alone where there is no sd (one patient)."""
    return metric.format(mean) + ("" if sd is None else f" ± {metric.format(sd)}")


def patients_row(result, methods):
    """The Fig. 5 table's row of the mean over patients ± sd across them."""
    n = result["methods"][BICUBIC]["patients"]["n"]
    cells = [mean_sd_text(m, p["mean"][k], p["sd"][k])
             for p in (result["methods"][method]["patients"] for method in methods)
             for k, m in METRICS.items()]
    label = f"**mean over {n} patients** (± sd across them)" if n > 1 else \
        "**mean over 1 patient** (its images' mean: no spread across patients)"
    return f"| {label} | " + " | ".join(cells) + " |"


def patient_table(result, methods):
    """One row per test patient: its image count and each method's mean over its images."""
    head = "| patient | images | " + " | ".join(f"{name} {m.title}" for name in methods
                                                for m in METRICS.values()) + " |"
    rule = "|---" * (2 + len(METRICS) * len(methods)) + "|"
    lines = ["Per patient (each patient's mean over its test images):", "", head, rule]
    each = {method: result["methods"][method]["patients"]["each"] for method in methods}
    for i, e in enumerate(each[BICUBIC]):
        cells = [m.format(each[method][i][k]) for method in methods for k, m in METRICS.items()]
        lines.append(f"| {e['patient']} | {e['images']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
