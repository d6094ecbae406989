"""`python -m data_prep --input TREE ... --name NAME --series REGEX`: a study tree in, a data set
split by patient out (the plan: plan.py; the summary: summary.py)."""
from pathlib import Path

from core.errors import DataError

from .plan import find_series, name_series, series_pattern, read_patient_map, slice_sources, split
from .summary import manifest_part, summary_lines
from .walk import read_infos, tree_files


def parse_test_patients(text):
    """--test-patients: a count ("3") or patient IDs ("P1,P7"); None when not given."""
    if text is None:
        return None
    text = text.strip()
    if text.isdigit():
        return int(text)
    ids = [t.strip() for t in text.split(",") if t.strip()]
    if not ids:
        raise DataError(f"--test-patients {text!r}: give a count or patient IDs separated by ','")
    return ids


def plan_cohort(args, cfg):
    """(train sources, test sources, the manifest's cohort part) of ``args.input``."""
    pattern = series_pattern(args.series)
    wanted = parse_test_patients(args.test_patients)
    patient_map = read_patient_map(args.patients) if args.patients else {}
    files = tree_files(args.input)
    if not files:
        raise DataError(f"{', '.join(map(str, args.input))}: no files under --input")
    series, files_out = find_series(read_infos(files, args.jobs), pattern, patient_map,
                                    args.axis)
    used = [s for s in series if not s.reason]
    if not used:
        raise DataError(why_nothing_is_used(args.input, args.series, series, files_out))
    one_patient = args.test_slices or args.test_count
    the_split = split(used, wanted, args.test_slices, cfg.data_seed, args.gap, one_patient)
    used = [s for s in used if not s.reason]  # the one-patient split leaves short series out
    if not used:
        raise DataError(why_nothing_is_used(args.input, args.series, series, files_out))
    name_series(used)
    part = manifest_part(args.input, pattern, series, files_out, the_split, cfg.data_seed,
                         args.test_slices)
    train, test = slice_sources(used, args.rule, args.axis)
    return train, test, part


def why_nothing_is_used(inputs, series_regex, series, files_out):
    """The one line that says why no series of ``inputs`` is used: no series at all, none that
    ``series_regex`` matches, or why the first that matches is left out."""
    where = ", ".join(map(str, inputs))
    if not series:
        first = f" (first: {files_out[0][0]}: {files_out[0][1]})" if files_out else ""
        return f"{where}: no DICOM or volume files{first}"
    matched = [s for s in series if "does not match --series" not in s.reason]
    if matched:
        s = matched[0]
        return (f"--series {series_regex!r}: {len(matched)} series match but none is usable; "
                f"{s.description!r} ({s.where()}): {s.reason}")
    names = sorted({s.description for s in series})
    shown = ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")
    return f"--series {series_regex!r} matches none of the {len(series)} series under {where} " \
           f"(descriptions: {shown})"


def build_cohort(args, cfg, build, lock):
    """Plan, print the summary, then build through ``build(dest, train, test, cfg, manifest,
    jobs=...)`` under ``lock``; returns the built manifest."""
    train_sources, test_sources, part = plan_cohort(args, cfg)
    for line in summary_lines(args.name, part):
        print(line)
    manifest = {"sources": [{"path": str(Path(p).resolve()), "format": "study tree"}
                            for p in args.input],
                "intensity": {"rule": args.rule, "scope": "each series on its own"},
                "split": {"mode": part["split"]["mode"], "note": part["split"]["note"]},
                "cohort": part}
    with lock:  # the sources stream through the build, in args.jobs workers
        return build(Path(args.out) / args.name, train_sources, test_sources, cfg, manifest,
                     jobs=args.jobs)
