"""Pull, upscale, push back: ``inference.upscale --study UID --series REGEX [--pacs URL]`` (``make
upscale PACS= STUDY= SERIES=``) upscales series of a study on a PACS and stores each derived series
into the same study (docs/pacs.md).

For each series of the study whose SeriesDescription ``--series`` matches (the cohort's rule,
``data_prep.cohort.plan.description_matches``) and which is not itself a series this project
derived (its instances carry our mark, ``data_prep.io.marks.dicom_is_ours``):

- it is skipped when the study already holds its derived copy: a series of ours whose instances'
  SourceImageSequences name every instance of this series, and whose method is the same
  (``same_method``: for upscale, the factor and the net, ``inference.upscale_formats.same_method``);
- else it is fetched (WADO-RS) into a work folder, run as a folder (``run_one``), and the result
  stored (STOW-RS) all or nothing (``Pacs.store_series`` deletes what it was adding when the
  store fails midway). The derived series is written whole into a local folder before anything
  is stored, so a failure before the store leaves nothing on the server.

The study's SeriesNumbers are given to ``run_one``, so that the new number cannot clash. The work
folder is a temporary one, removed at the end; with ``--out`` the derived series are kept there
(``<out>/<SeriesNumber>_<SeriesDescription>_<SeriesInstanceUID of the source>/``), the pulled ones
in a temporary folder under it, removed at the end. A series that fails is named in the summary
and the others are done (exit 2); a failure of the whole run (the server unreachable, a wrong
password, an unknown study, no series matching) is one line before any work.

:func:`pull_run_push` is the generic loop (any ``run_one(in_folder, out_folder, used_numbers)``,
e.g. the through-plane pass of ``tools.thickslice``); :func:`run_pacs` is upscale's use of it.
"""
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset
from tqdm import tqdm

from core.cli import check_writable
from core.errors import DataError
from data_prep.cohort.plan import description_matches, series_pattern
from data_prep.io.marks import DICOM_GROUP, dicom_is_ours

__all__ = ["Job", "pull_run_push", "summary_lines", "failed", "run_pacs"]

# The attributes of an instance's DICOM JSON (WADO-RS metadata) that tell a derived series of ours
# from its source: ImageType, SOPClassUID, SOPInstanceUID, SeriesDescription, DerivationDescription,
# SourceImageSequence, ContributingEquipmentSequence, SeriesNumber.
KEPT_TAGS = ("00080008", "00080016", "00080018", "0008103E", "00082111", "00082112", "0018A001",
             "00200011")
SOP_UID = "00080018"
SHOWN_DESCRIPTIONS = 12  # an error line names at most this many of the study's descriptions


@dataclass
class Job:
    """One source series (a ``data_prep.dicomweb.Series``); ``state``: "new", "stored", "there"
    (its derived copy was in the study), "failed" (``why``); ``derived``: (SeriesNumber,
    SeriesDescription, instances) of the series stored or found."""
    source: object
    state: str = "new"
    why: str = ""
    derived: tuple = None


def instance_dataset(item):
    """A pydicom Dataset of the attributes of KEPT_TAGS of one instance's DICOM JSON, and of the
    private group of earlier versions' mark (the rest, pixel data and bulk data included, left
    out)."""
    private = f"{DICOM_GROUP:04X}"
    return Dataset.from_json({tag: value for tag, value in item.items()
                              if (tag in KEPT_TAGS or tag.upper().startswith(private))
                              and "BulkDataURI" not in value})  # a reference, not a value


def study_instances(pacs, series):
    """{SeriesInstanceUID: [Dataset of each instance (:func:`instance_dataset`)]}."""
    return {s.uid: [instance_dataset(item) for item in pacs.metadata(s)] for s in series}


def derived_copy(source, instances, ours, same_method):
    """The series of ``ours`` that is ``source``'s derived copy by the same method (the module
    docstring), or None."""
    sops = {str(ds.get("SOPInstanceUID", "")) for ds in instances[source.uid]}
    for s in ours:
        named = {str(ref.get("ReferencedSOPInstanceUID", ""))
                 for ds in instances[s.uid] for ref in ds.get("SourceImageSequence", [])}
        # Made from this whole series (an upscaled instance names its own source, a through-plane
        # one all of them), and by this method.
        if sops <= named and same_method(instances[s.uid][0]):
            return s
    return None


def sources_of(pacs, study, series_regex):
    """(the study's series, {uid: instances}, the series of ours, the sources to run): PacsError
    (one line) for an unknown study, no series matching (naming the study's descriptions)."""
    pattern = series_pattern(series_regex)
    everything = pacs.series(study)  # PacsError for an unknown study, unreachable, 401
    instances = study_instances(pacs, everything)
    ours = [s for s in everything if instances[s.uid] and dicom_is_ours(instances[s.uid][0])]
    sources = [s for s in everything if s not in ours and instances[s.uid]
               and description_matches(pattern, s.description)]
    if not sources:
        names = sorted({s.description for s in everything if s not in ours})
        shown = ", ".join(repr(n) for n in names[:SHOWN_DESCRIPTIONS])
        more = f" and {len(names) - SHOWN_DESCRIPTIONS} more" if len(names) > SHOWN_DESCRIPTIONS else ""
        raise DataError(f"{pacs.url}: no series of study {study} has a SeriesDescription matching "
                        f"--series {series_regex!r} (its series: {shown or 'none'}{more}; a series "
                        "this project derived is not used again)")
    return everything, instances, ours, sources


@contextmanager
def work_folders(keep=None):
    """(pulled, out): where the fetched series go, and the derived ones; both temporary, or
    ``out`` = ``keep`` (kept) and ``pulled`` a temporary folder in it. Removed at the end: only
    the temporary folders made here."""
    if keep is not None:
        keep = Path(keep)
        check_writable(keep)
        if keep.exists() and not keep.is_dir():
            raise DataError(f"{keep}: exists and is not a folder (--out keeps the derived series)")
        keep.mkdir(parents=True, exist_ok=True)
        pulled = Path(tempfile.mkdtemp(prefix=".pulled-", dir=keep))
        try:
            yield pulled, keep
        finally:
            shutil.rmtree(pulled, ignore_errors=True)
        return
    base = Path(tempfile.mkdtemp(prefix="medsr-pacs-"))
    try:
        yield base / "in", base / "out"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def derived_of(folder):
    """(SeriesNumber, SeriesDescription, instances) of the series written into ``folder``."""
    from data_prep.io.dicom import dcmread
    from data_prep.io.dicom_series import series_files
    files = series_files(folder)
    ds = dcmread(str(files[0]), files[0], stop_before_pixels=True,
                 specific_tags=["SeriesNumber", "SeriesDescription"])
    return ds.get("SeriesNumber"), str(ds.get("SeriesDescription", "")), len(files)


def pull_run_push(pacs, study, series_regex, run_one, same_method, keep=None):
    """The module docstring's loop over the study's series: ``run_one(in_folder, out_folder,
    used_numbers)`` writes the derived series of the series fetched into ``in_folder`` into the
    new folder ``out_folder``, its SeriesNumber not one of ``used_numbers``; ``same_method(ds)``:
    whether a derived instance (a Dataset of KEPT_TAGS) was made by the method ``run_one`` runs.
    Returns the summary (:func:`summary_lines`)."""
    everything, instances, ours, sources = sources_of(pacs, study, series_regex)
    numbers = {s.number for s in everything if s.number is not None}
    jobs = [Job(s) for s in sources]
    with work_folders(keep) as (pulled, out):
        for job in tqdm(jobs, desc="series", unit="series", disable=None):
            there = derived_copy(job.source, instances, ours, same_method)
            if there is not None:
                job.state, job.derived = "there", (there.number, there.description, there.instances)
                continue
            name = job.source.folder_name()
            try:
                pacs.fetch_series(job.source, pulled / name)
                run_one(pulled / name, out / name, sorted(numbers))
                job.derived = derived_of(out / name)
                pacs.store_series(out / name)  # all or nothing
            except MemoryError:
                job.state, job.why = "failed", "out of memory (try a smaller --memory-budget)"
                continue
            except DataError as exc:  # PacsError too: the next series may go through
                job.state, job.why = "failed", str(exc)
                continue
            finally:
                shutil.rmtree(pulled / name, ignore_errors=True)
                if keep is None:
                    shutil.rmtree(out / name, ignore_errors=True)
            job.state = "stored"
            numbers.add(int(job.derived[0]))
    return {"study": study, "url": pacs.url, "jobs": jobs, "kept": keep}


def failed(summary):
    return [j for j in summary["jobs"] if j.state == "failed"]


def summary_lines(summary, prog="upscale"):
    """The counts, then a line per series: stored, already there, failed."""
    jobs = summary["jobs"]
    count = {state: sum(j.state == state for j in jobs) for state in ("stored", "there", "failed")}
    where = f"; kept in {summary['kept']}" if summary["kept"] is not None and count["stored"] else ""
    lines = [f"{prog}: study {summary['study']}: {len(jobs)} series: {count['stored']} stored, "
             f"{count['there']} already there, {count['failed']} failed{where}"]
    for j in jobs:
        what = f"series {j.source.number} {j.source.description!r}"
        if j.state == "stored":
            number, description, n = j.derived
            lines.append(f"  stored    {what} -> series {number} {description!r}, {n} instance(s)")
        elif j.state == "there":
            lines.append(f"  there     {what}: already in the study as series {j.derived[0]}, "
                         "nothing stored")
        else:
            lines.append(f"  FAILED    {what}: {j.why} (nothing of it stored)")
    return lines


def report(summary, prog="upscale"):
    """Print the summary; the exit status: 2 when a series failed (the others being stored)."""
    for line in summary_lines(summary, prog):
        print(line)
    bad = failed(summary)
    if bad:
        print(f"{prog}: error: {len(bad)} of {len(summary['jobs'])} series failed (named above); "
              "nothing of them was stored", file=sys.stderr)
        return 2
    return 0


# ------------------------------------------------------------------------ upscale's use of it

def run_pacs(args):
    """``inference.upscale --study``: the series of the study upscaled and stored back; 2 when a
    series failed (the summary names it), the others being stored."""
    from data_prep.dicomweb import connect
    from inference.upscale import load_net, resolve_run, upscale_path
    from inference.upscale_formats import same_method
    from inference.upscale_tree import net_id
    pacs = connect(args.pacs)
    deploy, caffemodel, scale = resolve_run(args.run, args.model, args.deploy)
    name = net_id(deploy, caffemodel)
    loaded = {}

    def run_one(src, dst, used):
        if "net" not in loaded:  # once, and only when a series is to be upscaled
            loaded["net"] = load_net(args)[0]
        return upscale_path(src, dst, loaded["net"], force=args.force, scale=scale,
                            net_name=name, used_series_numbers=used)

    summary = pull_run_push(pacs, args.study, args.series, run_one,
                            lambda ds: same_method(ds.get("DerivationDescription"), scale, name),
                            keep=args.out)
    return report(summary)
