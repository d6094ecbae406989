"""`make bench-cohort`: how the cohort data build grows with the cohort (issue 33, deliverable 5).

    python -m tools.bench_cohort [--sizes 10,100,1000] [--jobs 1,2] [--work DIR] [--keep]
                                 [--study TREE] [--crop PX] [--out bench/cohort.json]
                                 [--table bench/cohort.md]

For each size N, a synthetic cohort of N T2 axial series (tools/synth_cohort.py: patients each
holding a copy of the shipped ProstateX-0000 T2 series and of the ProstateX-0001 study, whose two
T2 axial series make three a patient, so ceil(N/3) patients; plus the generator's decoys and
broken files; new PatientIDs, UIDs and intensities) is written once under the work folder, then
built by
``python -m data_prep --input TREE --name ... --series t2_tse_tra -j J`` in a subprocess for each
J, nothing else in it. Per build: the wall time, when the plan was printed, the peak memory of the
build's whole process tree (tools/tree_memory.py says what is measured), the slices and patches
built (from the manifest), and the data set's disk use against patches x 6,120 bytes (one float32
33x33 input and 21x21 label). Each data set is deleted once measured, each tree after its size
(--keep keeps both; a kept tree is reused by the next run in the same --work).

The targets (issue 33) are reported, not asserted: time linear in slices, >= 100 slices/s at the
largest size with -j 2 (the issue's is for 1,000 series), peak RSS flat and under 1.5 GB, disk
within 5 % of patches x 6,120 B. Writes --out (JSON) and --table (markdown), prints the table and
the ratios. Disk: before each size, the tree and one data set are estimated (an upper bound: every
slice at the training stride) and a work folder with less free space is refused.
"""
import argparse
import datetime
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from core.args import command_line
from core.atomic import write_json_atomic, write_text_atomic
from core.cli import guarded
from core.config import DEFAULT, ROOT
from core.errors import DataError
from core.machine import cpu_model
from data_prep.sources import PROSTATE_DIR, PROSTATE_STUDY
from data_prep.shards import MIB, patch_bytes

from tools.tree_memory import run_measured

SERIES_REGEX = "t2_tse_tra"  # the shipped T2 series' description: what synth_cohort counts
SLICES_PER_SERIES = 19  # ProstateX's T2 axial series (the shipped one and the study's)
SLICE_SIDE = 384  # their slices' rows and columns
DEFAULT_STUDY = PROSTATE_STUDY
MARK = ".bench_cohort"  # in a work folder this tool made: what it may delete there
TARGETS = {"slices_per_s_j2": 100, "peak_rss_mb": 1500, "disk_ratio_tolerance": 0.05,
           "time_per_slice_growth": 1.2, "rss_growth": 1.2}


class BenchError(Exception):
    """The machine cannot run the benchmark (too little disk) or a build failed: exit 1."""


def positive_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers separated by ','")
    return values


def parse_args(argv):
    p = command_line("tools.bench_cohort", short="bench_cohort",
                     description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=positive_list, default=[10, 100, 1000],
                   help="cohort sizes in T2 axial series (default 10,100,1000)")
    p.add_argument("--jobs", type=positive_list, default=[1, 2], help="data_prep -j values "
                   "(default 1,2)")
    p.add_argument("--work", type=Path, help="folder for the trees and data sets (a new or empty "
                   "one, or one this tool made; default: a new one in the temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the trees and data sets")
    p.add_argument("--study", type=Path, default=DEFAULT_STUDY, help="the study tree copied "
                   "into each patient (default: the shipped ProstateX-0001 study)")
    p.add_argument("--crop", type=int, metavar="PX", help="central PX x PX pixels only (tests)")
    p.add_argument("--gen-jobs", type=int, default=os.cpu_count(), help="processes writing "
                   "the trees (default: the cores)")
    p.add_argument("--interval", type=float, default=0.1, help="memory sampling interval (s)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "cohort.json")
    p.add_argument("--table", type=Path, default=ROOT / "bench" / "cohort.md")
    args = p.parse_args(argv)
    if args.crop is not None and args.crop < DEFAULT.patch:
        p.error(f"--crop must be >= {DEFAULT.patch} (one patch)")
    if args.gen_jobs < 1 or args.interval <= 0:
        p.error("--gen-jobs must be >= 1 and --interval > 0")
    return args


# ---- the work folder: only what this tool made is deleted


def open_work(work):
    """The work folder (made, or checked to be empty or ours) and whether this run made it."""
    if work is None:
        work = Path(tempfile.mkdtemp(prefix="bench_cohort_"))
        (work / MARK).touch()
        return work, True
    if work.exists() and not work.is_dir():
        raise DataError(f"{work}: --work is a file; give a folder")
    made = not work.exists()
    if not made and not (work / MARK).exists() and any(work.iterdir()):
        raise DataError(f"{work}: --work holds files this tool did not write; give a new or "
                        "empty folder")
    work.mkdir(parents=True, exist_ok=True)
    (work / MARK).touch()
    return work, made


def close_work(work, made):
    """Remove the work folder if this run made it and nothing is left in it but the mark."""
    if made and [p.name for p in work.iterdir()] == [MARK]:
        (work / MARK).unlink()
        work.rmdir()


def tree_name(size, crop):
    return f"tree-{size}" + (f"-crop{crop}" if crop else "")


# ---- estimates


def folder_bytes(folder, allocated=True):
    """Bytes of the files under ``folder``: allocated on disk (st_blocks) or their sizes."""
    total = 0
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            st = path.stat()
            total += st.st_blocks * 512 if allocated else st.st_size
    return total


def patches_per_slice(side, cfg, stride):
    side -= side % cfg.scale
    return ((side - cfg.patch) // stride + 1) ** 2 if side >= cfg.patch else 0


def t2_per_patient(study):
    """T2 axial series a synthetic patient holds: the shipped one and the study's."""
    from tools.synth_cohort import read_series_files  # pydicom: only when a tree is planned

    described = [str(d[0].get("SeriesDescription", "")) for d in read_series_files(study).values()]
    return 1 + described.count(SERIES_REGEX)


def estimate_bytes(size, per_patient, study, crop, cfg=DEFAULT):
    """(tree, data set) bytes of a size: the tree as the sources (decoys: about one more T2
    series a patient), the data set as if every slice gave training patches (an upper bound)."""
    patients = math.ceil(size / per_patient)
    t2 = folder_bytes(PROSTATE_DIR, allocated=False)
    tree = patients * (2 * t2 + folder_bytes(study, allocated=False))
    side = min(crop or SLICE_SIDE, SLICE_SIDE)
    per_slice = patches_per_slice(side, cfg, cfg.stride_train)
    data = size * SLICES_PER_SERIES * per_slice * patch_bytes(*shapes(cfg))
    return tree, data + 4 * cfg.shard_mb * MIB  # the shards being written and permuted


def shapes(cfg):
    return (1, 1, cfg.patch, cfg.patch), (1, 1, cfg.label, cfg.label)


def check_disk(work, need, size):
    free = shutil.disk_usage(work).free
    if free < need:
        raise BenchError(f"{work}: {free / 1e9:.1f} GB free; {size} series need about "
                         f"{need / 1e9:.1f} GB (a tree and the data sets): give --work on a "
                         "larger disk, or smaller --sizes")


# ---- one size


def make_tree(work, size, args):
    """The size's tree under ``work`` (reused if a kept one is there); (path, seconds taken)."""
    from tools.synth_cohort import write_cohort  # pydicom: only when a tree is written

    tree = work / tree_name(size, args.crop)
    if tree.is_dir():
        return tree, 0.0
    partial = tree.with_name(tree.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # ours: an interrupted earlier run's
    start = time.monotonic()
    # as many patients as it takes: write_cohort stops at ``size`` T2 series
    write_cohort(partial, size, seed=0, studies=[args.study], crop=args.crop, t2_series=size,
                 jobs=args.gen_jobs)
    partial.rename(tree)  # whole trees only: the name says it is complete
    return tree, time.monotonic() - start


def build_once(tree, work, size, jobs, args):
    """One data_prep build of ``tree``; its row of the table (a dict)."""
    name = f"bench{size}_j{jobs}"
    data_root = work / "data"
    shutil.rmtree(data_root / name, ignore_errors=True)  # ours, kept by --keep before
    cmd = [sys.executable, "-m", "data_prep", "--input", str(tree), "--name", name, "--series",
           SERIES_REGEX, "--out", str(data_root), "-j", str(jobs)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", GLOG_minloglevel="2")
    log = work / f"{name}.log"
    m = run_measured(cmd, env, log, args.interval, cwd=ROOT)
    if m.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise BenchError(f"data_prep -j {jobs} on {size} series exited {m.returncode}: {tail[0]}")
    manifest = json.loads((data_root / name / "manifest.json").read_text())
    row = result_row(size, jobs, m, manifest, data_root / name)
    if not args.keep:
        shutil.rmtree(data_root / name)
        log.unlink()
    return row


def result_row(size, jobs, m, manifest, dataset):
    slices = len(manifest["train_slices"]) + len(manifest["test_slices"])
    patches = manifest["patches"]["train"] + manifest["patches"]["test"]
    side, label = manifest["config"]["patch"], manifest["config"]["label"]
    per_patch = patch_bytes((1, 1, side, side), (1, 1, label, label))
    disk = folder_bytes(dataset)
    used = manifest["cohort"]["series"]
    wall, cpu = round(m.wall_s, 3), round(m.cpu_s, 2)  # the rates below are of these
    return {
        "size": size, "jobs": jobs, "series": len(used),
        "patients": len({s["patient"] for s in used}),
        "slices": slices, "slices_train": len(manifest["train_slices"]),
        "slices_test": len(manifest["test_slices"]),
        "patches": patches, "patches_train": manifest["patches"]["train"],
        "patches_test": manifest["patches"]["test"],
        "files": sum(len(v) for v in manifest["files"].values()), "shuffle": manifest["shuffle"],
        "wall_s": wall,
        "plan_s": None if m.first_line_s is None else round(m.first_line_s, 3),
        "slices_per_s": round(slices / wall, 2),
        "cpu_s": cpu, "slices_per_cpu_s": round(slices / max(cpu, 0.01), 2),
        "peak_rss_tree_mb": round(m.peak_rss_tree / MIB, 1),
        "peak_pss_tree_mb": round(m.peak_pss_tree / MIB, 1),
        "peak_rss_process_mb": round(m.peak_rss_process / MIB, 1),
        "hwm_sum_mb": round(m.hwm_sum / MIB, 1),
        "peak_processes": m.peak_processes, "memory_samples": m.samples,
        "disk_bytes": disk, "disk_apparent_bytes": folder_bytes(dataset, allocated=False),
        "patch_bytes": per_patch, "disk_ratio": round(disk / (patches * per_patch), 4),
    }


# ---- ratios, targets, table


def add_ratios(rows):
    """Per -j, each size against the smallest: time per slice and peak tree RSS."""
    for jobs in sorted({r["jobs"] for r in rows}):
        mine = sorted((r for r in rows if r["jobs"] == jobs), key=lambda r: r["size"])
        base = mine[0]
        for r in mine:
            r["time_per_slice_vs_smallest"] = round(
                (r["wall_s"] / r["slices"]) / (base["wall_s"] / base["slices"]), 3)
            r["cpu_per_slice_vs_smallest"] = round(
                (r["cpu_s"] / r["slices"]) / max(base["cpu_s"] / base["slices"], 1e-9), 3)
            r["rss_vs_smallest"] = round(r["peak_rss_tree_mb"] / base["peak_rss_tree_mb"], 3)
    return rows


def verdicts(rows):
    """Each target: met or not, and the numbers it was judged on."""
    largest = max(r["size"] for r in rows)
    at_largest_j2 = [r["slices_per_s"] for r in rows if r["size"] == largest and r["jobs"] == 2]
    growth = max(r["time_per_slice_vs_smallest"] for r in rows)
    cpu_growth = max(r["cpu_per_slice_vs_smallest"] for r in rows)
    rss = max(r["peak_rss_tree_mb"] for r in rows)
    rss_growth = max(r["rss_vs_smallest"] for r in rows)
    disk = [r["disk_ratio"] for r in rows]
    return {
        "time_linear_in_slices": {
            "met": growth <= TARGETS["time_per_slice_growth"], "worst_time_per_slice_vs_smallest": growth,
            "worst_cpu_per_slice_vs_smallest": cpu_growth,  # the same in CPU time: on a busy machine
            "rule": f"time per slice at every size <= {TARGETS['time_per_slice_growth']} x the smallest size's"},
        "slices_per_s_j2_at_largest": {
            "met": bool(at_largest_j2) and min(at_largest_j2) >= TARGETS["slices_per_s_j2"],
            "size": largest, "slices_per_s": at_largest_j2,
            "rule": f">= {TARGETS['slices_per_s_j2']} slices/s with -j 2 (the issue's: at 1,000 series)"},
        "peak_rss_flat_and_bounded": {
            "met": rss < TARGETS["peak_rss_mb"] and rss_growth <= TARGETS["rss_growth"],
            "worst_peak_rss_tree_mb": rss, "worst_rss_vs_smallest": rss_growth,
            "rule": f"summed tree RSS < {TARGETS['peak_rss_mb']} MB at every size, and <= "
                    f"{TARGETS['rss_growth']} x the smallest size's"},
        "disk_within_5_percent": {
            "met": all(abs(d - 1) <= TARGETS["disk_ratio_tolerance"] for d in disk),
            "disk_ratios": disk, "rule": "data set's allocated bytes / (patches x 6,120 B) within 1 +- 0.05"},
    }


COLUMNS = [("series", "series"), ("patients", "patients"), ("-j", "jobs"), ("slices", "slices"),
           ("patches", "patches"), ("wall s", "wall_s"), ("plan s", "plan_s"),
           ("slices/s", "slices_per_s"), ("CPU s", "cpu_s"), ("slices per CPU s", "slices_per_cpu_s"),
           ("s/slice vs smallest", "time_per_slice_vs_smallest"),
           ("peak RSS tree MB", "peak_rss_tree_mb"), ("peak PSS tree MB", "peak_pss_tree_mb"),
           ("largest process MB", "peak_rss_process_mb"), ("sum of process peaks MB", "hwm_sum_mb"),
           ("disk MB", "disk_mb"),
           ("disk / (patches x 6,120 B)", "disk_ratio")]


def table(rows):
    lines = ["| " + " | ".join(h for h, _ in COLUMNS) + " |",
             "| " + " | ".join("---" for _ in COLUMNS) + " |"]
    for r in rows:
        r = dict(r, disk_mb=round(r["disk_bytes"] / MIB, 1))
        lines.append("| " + " | ".join(_cell(r[k]) for _, k in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _cell(v):
    if v is None:
        return ""
    return f"{v:,}" if isinstance(v, int) else str(v)


def verdict_lines(checks):
    return [f"{name}: {'met' if c['met'] else 'NOT met'} "
            f"({', '.join(f'{k}={v}' for k, v in c.items() if k not in ('met', 'rule'))}; {c['rule']})"
            for name, c in checks.items()]


# ---- the run


def machine():
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average": os.getloadavg(),
            "python": sys.version.split()[0]}


def run(args):
    if not args.study.is_dir():
        raise DataError(f"{args.study}: no study tree there; give --study (the ProstateX-0001 "
                        "study, data_prep/sources/prostate_mr/ProstateX-0001_study)")
    per_patient = t2_per_patient(args.study)
    work, made = open_work(args.work)
    started, rows = machine(), []
    try:
        for size in args.sizes:
            tree_bytes, data_bytes = estimate_bytes(size, per_patient, args.study, args.crop)
            kept = (work / tree_name(size, args.crop)).is_dir()
            data_sets = len(args.jobs) if args.keep else 1  # else each is deleted once measured
            check_disk(work, (0 if kept else tree_bytes) + data_sets * data_bytes, size)
            what = "the kept tree" if kept else f"a tree of about {tree_bytes / 1e9:.2f} GB"
            print(f"bench_cohort: {size} series: {what} and a data set of up to "
                  f"{data_bytes / 1e9:.2f} GB in {work}", flush=True)
            tree, gen_s = make_tree(work, size, args)
            for jobs in args.jobs:
                row = build_once(tree, work, size, jobs, args)
                row.update(tree_bytes=folder_bytes(tree), tree_write_s=round(gen_s, 1))
                rows.append(row)
                print(f"bench_cohort: {size} series -j {jobs}: {row['slices']} slices in "
                      f"{row['wall_s']:.1f} s ({row['slices_per_s']} slices/s), peak RSS "
                      f"{row['peak_rss_tree_mb']} MB, disk ratio {row['disk_ratio']}", flush=True)
            if not args.keep:
                shutil.rmtree(tree)
    finally:
        if not args.keep:
            shutil.rmtree(work / "data", ignore_errors=True)  # ours: data sets of this tool
            close_work(work, made)
    return report(args, add_ratios(rows), started)


def report(args, rows, started):
    checks = verdicts(rows)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": "python -m tools.bench_cohort " + " ".join(sys.argv[1:]),
              "machine": started | {"load_average_after": os.getloadavg()},
              "series_regex": SERIES_REGEX, "study": str(args.study), "crop": args.crop,
              "targets": TARGETS, "runs": rows, "checks": checks, "table": table(rows)}
    for path in (args.out, args.table):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result)
    write_text_atomic(args.table, result["table"])
    print(result["table"], end="")
    for line in verdict_lines(checks):
        print(line)
    print(f"bench_cohort: wrote {args.out} and {args.table}")
    return 0


def main(argv=None):
    args = parse_args(argv)

    def work():
        try:
            return run(args)
        except BenchError as exc:
            print(f"bench_cohort: error: {exc}", file=sys.stderr)
            return 1
    return guarded("bench_cohort", work)


if __name__ == "__main__":
    sys.exit(main())
