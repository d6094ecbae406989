"""Whole study trees for ``inference.upscale --series REGEX``: every matching series of a tree, upscaled
into a tree that mirrors it; a series that fails is named at the end and the others are done; a
rerun skips the series finished before.

Series are found as the cohort build finds them (``data_prep.cohort``: any depth, DICOM files
grouped by SeriesInstanceUID wherever they lie, a volume file one series, ``--series`` a
case-insensitive regex on SeriesDescription, else ProtocolName, a volume's file name). A series of
several orientations or of several images at one position is left out with its reason, as a
cohort leaves it out: listed in the summary, not a failure. A patient is not needed to upscale,
so a series without PatientID is upscaled.

Where each output goes (``--out`` mirrors ``--in``; the rule cannot make two outputs meet):
    a DICOM series whose files are alone in their folder F (no other series, DICOM or volume,
    in F or under it), F not ``--in`` itself: OUT/<F relative to IN>/, file names kept;
    any other DICOM series (several series in one folder, a series across folders, files
    directly in ``--in``): OUT/<its files' common folder, relative>/<SeriesInstanceUID>/;
    a volume: OUT/<its path relative to IN>.
The rule depends on the tree only, not on ``--series``: a rerun with another regex puts a series
where it was. Should a tree still make two outputs meet (one inside another, or one on the
record), each of those series fails, before any work.

Finished: OUT holds ``upscale-tree.json`` (RECORD), which names this project and, for each series
finished, its key: the net (SHA-256 of the caffemodel and deploy prototxt), the scale, the engine,
for volumes ``--axis``, the SeriesInstanceUID and its files (path relative to IN and size). A
series is skipped when the record has its output with the same key and that output exists and
carries this project's mark (``data_prep.io.marks``). The record is rewritten (atomically) after
each series, whose output is itself written under a temporary name and renamed.

``--out`` is new, empty, or a tree this command wrote (it holds the record); the outputs in the
way of a series that is not finished (another net, changed files) are replaced only with
``--force`` and only when they carry the mark (``core.outputs.check_replace``): else the command
is refused in one line before any work. Nothing else in OUT is touched.

Exit status: 0 when every series used is done or skipped; 2 when any failed (each for a fault of
its data, which ``upscale`` on that series alone refuses with 2: the others are written);
a file system error (disk full, read-only) stops the run with 1, since it stops every series.
"""
import hashlib
import json
import os
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from core.atomic import write_json_atomic
from core.cli import check_writable
from core.errors import DataError
from core.outputs import PRODUCER, check_replace
from data_prep.cohort.build import why_nothing_is_used
from data_prep.cohort.plan import find_series, series_pattern
from data_prep.cohort.summary import SHOWN, grouped_left_out, left_out_line, series_entry
from data_prep.cohort.walk import read_infos, tree_files
from data_prep.io import by_name, sniff
from data_prep.io.marks import series_refusal

RECORD = "upscale-tree.json"
KIND = "upscale tree"


@dataclass
class Job:
    """One series of the tree to upscale: ``series`` (``data_prep.cohort.plan.Series``), its
    output, its key; ``state``: "new", "done" (skipped), "replace", or "failed" (``why``)."""
    series: object
    out: Path
    key: str = ""
    state: str = "new"
    why: str = ""
    slices: int = None


# ------------------------------------------------------------------------------ the plan

def find_tree_series(src, pattern, jobs=1):
    """(used series, left-out series, [(path, reason)] files left out) of the tree ``src``."""
    infos = [_with_patient(i) for i in read_infos(tree_files([src]), jobs)]
    volumes = {str(Path(i.path).resolve()): "-" for i in infos if i.kind == "volume"}
    series, files_out = find_series(infos, pattern, volumes)
    return ([s for s in series if not s.reason], [s for s in series if s.reason], files_out)


def _with_patient(info):
    """The record of a DICOM file with a placeholder PatientID where it has none: the cohort
    leaves such a series out (its patient is unknown), an upscale needs none."""
    if info.kind != "dicom" or info.header.get("PatientID"):
        return info
    return replace(info, header={**info.header, "PatientID": "-"})


def output_of(series, src, dst, homes):
    """Where ``series`` is written (the module docstring's rule); ``homes``: {folder: the series
    with a file in it or under it}, from :func:`series_homes`."""
    if series.kind == "volume":
        return dst / Path(series.paths[0]).relative_to(src)
    folders = {Path(p).parent for p in series.paths}
    home = Path(os.path.commonpath([str(f) for f in folders]))
    if len(folders) == 1 and home != src and homes[home] == {series.uid}:
        return dst / home.relative_to(src)
    return dst / home.relative_to(src) / series.uid


def series_homes(all_series, src):
    """{folder: {uids of the series with a file in it or in a folder under it}} up to ``src``."""
    homes = {}
    for s in all_series:
        for path in s.paths:
            folder = Path(path).parent
            while True:
                homes.setdefault(folder, set()).add(s.uid)
                if folder == src or folder == folder.parent:
                    break
                folder = folder.parent
    return homes


def plan_jobs(src, dst, used, left_out):
    """A Job per used series, with its output; those whose output meets another's (equal, or
    one inside the other) or the record fail here, before any work."""
    homes = series_homes(used + left_out, src)
    jobs = [Job(s, output_of(s, src, dst, homes)) for s in used]
    taken = {dst / RECORD: None}
    for job in jobs:
        if job.out in taken:
            _clash(job, taken[job.out])
        else:
            taken[job.out] = job
    for job in jobs:
        for above in job.out.parents:
            if above in taken and above != dst:
                _clash(job, taken[above])
    return jobs


def _clash(job, other):
    for j in (job, other):
        if j is not None:
            j.state = "failed"
            j.why = (f"its output {j.out} would meet another's or the record (the tree names a "
                     "folder as a SeriesInstanceUID): upscale it on its own")


# -------------------------------------------------------------------- finished, or not

def net_id(deploy, caffemodel):
    """SHA-256 of the caffemodel and the deploy prototxt: which net wrote an output."""
    digest = hashlib.sha256()
    for path in (caffemodel, deploy):
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def job_key(job, src, settings):
    """The key of a series' output: ``settings`` (net, scale, engine; axis for volumes), the
    SeriesInstanceUID and its files (path relative to ``src``, size)."""
    s = job.series
    files = sorted((str(Path(p).relative_to(src)), os.path.getsize(p)) for p in s.paths)
    wanted = {k: v for k, v in settings.items() if k != "axis" or s.kind == "volume"}
    text = json.dumps({"settings": wanted, "uid": s.uid, "files": files}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def own(job):
    """``core.outputs.check_replace``'s ``own`` for the job's output (its mark)."""
    if job.series.kind == "dicom":
        return series_refusal
    from data_prep.io.marks import file_refusal
    fmt = by_name(sniff(job.series.paths[0]))
    return lambda path: file_refusal(fmt.name, path)


def sort_jobs(jobs, record, src, settings, force):
    """Set each job's key and state: "done" (finished before), "new" or "replace"; a DataError
    naming the first output in the way (and how many) when any may not be written."""
    from inference.upscale import check_io
    finished = record.get("series", {})
    refused = []
    for job in (j for j in jobs if j.state != "failed"):
        job.key = job_key(job, src, settings)
        here = job.out.exists() or job.out.is_symlink()
        entry = finished.get(str(job.out))
        if here and entry and entry.get("key") == job.key and own(job)(job.out) is None:
            job.state, job.slices = "done", entry.get("slices")
            continue
        try:
            if job.series.kind == "volume":
                check_io(job.series.paths[0], job.out, force)
            else:
                check_replace(job.out, own(job), force, inputs=[src])
        except DataError as exc:
            refused.append(str(exc))
            continue
        job.state = "replace" if here else "new"
    if refused:
        more = f"; {len(refused) - 1} more series outputs are in the way" \
            if len(refused) > 1 else ""
        raise DataError(f"{refused[0]}{more} (a series not finished with this net and these "
                        "files; nothing was written)")


# --------------------------------------------------------------------------- --out

def check_tree_out(src, dst):
    """DataError unless the tree ``src`` may be upscaled into ``dst``: a folder that is not the
    input, in it or holding it, and new, empty or a tree this command wrote (holds RECORD)."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DataError(f"{src}: --series goes with a folder (a study tree); upscale a file "
                        "without --series")
    real_src, real_dst = src.resolve(), dst.resolve()
    if real_dst == real_src:
        raise DataError(f"{dst}: --out is the input; write somewhere else")
    if real_src in real_dst.parents:
        raise DataError(f"{dst}: --out lies inside the input {src} (a rerun would read the "
                        "outputs as series); write somewhere else")
    if real_dst in real_src.parents:
        raise DataError(f"{dst}: --out holds the input {src}; write somewhere else")
    check_writable(dst)
    if dst.is_symlink() or dst.exists() and not dst.is_dir():
        raise DataError(f"{dst}: exists and is not a folder; the output of --series is a folder")
    if dst.exists() and any(dst.iterdir()) and read_record(dst) is None:
        raise DataError(f"{dst}: exists and is not a tree this project upscaled into (no "
                        f"{RECORD} of this project); give a new or empty folder for --out")


def read_record(dst):
    """The record of the tree output ``dst``, or None where there is none of this project's."""
    try:
        record = json.loads((Path(dst) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    ours = isinstance(record, dict) and record.get("producer") == PRODUCER and \
        record.get("kind") == KIND and isinstance(record.get("series"), dict)
    return record if ours else None


def place(series, src):
    """Where ``series`` lies, relative to ``src``: a volume's path, the folder of a DICOM
    series' files (their common folder, and how many, where they lie in several)."""
    folders = sorted({str(Path(p).parent) for p in series.paths})
    if series.kind == "volume":
        return _rel(series.paths[0], src)
    if len(folders) == 1:
        return _rel(folders[0], src)
    return f"{_rel(os.path.commonpath(folders), src)} ({len(folders)} folders)"


def _rel(path, root):
    rel = os.path.relpath(path, root)
    return "." if rel == "." else rel


# --------------------------------------------------------------------------- the run

def upscale_tree(src, dst, series_regex, settings, upscale_one, force=False, jobs=1):
    """Upscale every series of the tree ``src`` that ``series_regex`` matches into ``dst``.

    ``upscale_one(job)`` upscales one series (``job.series``) into ``job.out`` and returns
    ``{"slices", ...}`` (it holds the net); ``settings``: what, besides the
    files, says an output is the same (net id, scale, engine, axis). Returns the summary
    (:func:`summary_lines` reads it). DataError, before any work, when nothing can be done."""
    src, dst = Path(src), Path(dst)
    check_tree_out(src, dst)
    pattern = series_pattern(series_regex)
    used, left_out, files_out = find_tree_series(src, pattern, jobs)
    if not used:
        raise DataError(why_nothing_is_used([src], series_regex, left_out, files_out))
    record = read_record(dst) or {"producer": PRODUCER, "kind": KIND, "series": {}}
    plan = plan_jobs(src, dst, used, left_out)
    sort_jobs(plan, _by_path(record, dst), src, settings, force)
    record.update(input=str(src.resolve()), settings=settings)
    dst.mkdir(parents=True, exist_ok=True)
    todo = [j for j in plan if j.state in ("new", "replace")]
    for job in tqdm(todo, desc="series", unit="series", disable=None):
        try:
            info = upscale_one(job)
        except DataError as exc:
            job.state, job.why = "failed", str(exc)
            continue
        except MemoryError:
            job.state, job.why = "failed", "out of memory (try a smaller --memory-budget)"
            continue
        except OSError as exc:  # disk full, read-only: it stops every series, so the run
            if exc.filename is None:  # a write() that fills the disk names no file
                raise OSError(exc.errno, exc.strerror, str(job.out)) from exc
            raise
        job.state, job.slices = "upscaled", info["slices"]
        record["series"][_rel(job.out, dst)] = {
            "uid": job.series.uid, "description": job.series.description,
            "input": place(job.series, src), "slices": info["slices"],
            "window": info.get("window"), "key": job.key,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_json_atomic(dst / RECORD, record)
    summary = {"src": src, "dst": dst, "jobs": plan, "left_out": left_out,
               "files_out": files_out, "scale": settings.get("scale")}
    record["last_run"] = _last_run(summary)
    write_json_atomic(dst / RECORD, record)
    return summary


def _by_path(record, dst):
    """The record with its series keyed by absolute output path (as Job.out)."""
    return {"series": {str(dst / rel): e for rel, e in record.get("series", {}).items()}}


def _last_run(summary):
    src, dst = summary["src"], summary["dst"]
    return {"failed": [{"input": place(j.series, src), "description": j.series.description,
                        "uid": j.series.uid, "out": _rel(j.out, dst), "reason": j.why}
                       for j in summary["jobs"] if j.state == "failed"],
            "series_left_out": [{"input": place(s, src), "description": s.description,
                                 "uid": s.uid, "reason": s.reason} for s in summary["left_out"]],
            "files_left_out": [{"path": _rel(p, src), "reason": r}
                               for p, r in summary["files_out"]]}


def failed(summary):
    return [j for j in summary["jobs"] if j.state == "failed"]


def summary_lines(summary):
    """The summary printed at the end: counts, then every series failed, and SHOWN lines of the
    series upscaled, skipped and left out (the record has them all)."""
    src, dst, jobs = summary["src"], summary["dst"], summary["jobs"]
    count = {state: [j for j in jobs if j.state == state]
             for state in ("upscaled", "done", "failed")}
    lines = [f"upscale: {len(jobs)} series: {len(count['upscaled'])} upscaled x{summary['scale']}, "
             f"{len(count['done'])} skipped (finished before), {len(count['failed'])} failed; "
             f"{len(summary['left_out'])} series and {len(summary['files_out'])} file(s) left "
             f"out -> {dst}"]
    for job in count["failed"]:  # all of them: each needs the user
        lines.append(f"  FAILED    {place(job.series, src)}  {job.series.description!r}: "
                     f"{job.why}")
    for state, word in (("upscaled", "upscaled "), ("done", "skipped  ")):
        lines += [f"  {word} {_where(j, src, dst)}  {j.series.description!r}  "
                  f"{j.slices if j.slices is not None else '?'} slice(s)"
                  for j in count[state][:SHOWN]]
        lines += _more(len(count[state]))
    groups = grouped_left_out([series_entry(s) | {"reason": s.reason} for s in summary["left_out"]])
    lines += [left_out_line(entries) for entries in groups[:SHOWN]]  # as make data's summary
    lines += _more(len(groups))
    lines += [f"  left out file  {_rel(p, src)}: {r}" for p, r in summary["files_out"][:SHOWN]]
    lines += _more(len(summary["files_out"]))
    return lines


def _where(job, src, dst):
    """The series' place in the input, and in the output where that is not the same path."""
    there, here = place(job.series, src), _rel(job.out, dst)
    return there if there == here else f"{there} -> {here}"


def _more(n):
    return [f"  ... and {n - SHOWN} more ({RECORD})"] if n > SHOWN else []
