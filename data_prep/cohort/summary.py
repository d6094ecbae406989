"""The cohort's part of the manifest (every series used, every series and file left out, with
why) and the one-screen summary `make data` prints of the same."""

SHOWN = 12  # lines per list on screen; the manifest has them all


def manifest_part(inputs, pattern, series, files_out, the_split, seed, test_slices):
    used = [s for s in series if not s.reason]
    return {
        "inputs": [str(p) for p in inputs],
        "series_regex": pattern.pattern,
        "split": {"mode": the_split.mode, "note": the_split.note,
                  "train_patients": the_split.train, "test_patients": the_split.test,
                  "seed": seed, "test_slices": "all" if test_slices is None else test_slices},
        "series": [series_entry(s) | {"role": s.role, "name": s.stem} for s in used],
        "series_left_out": [series_entry(s) | {"reason": s.reason} for s in series if s.reason],
        "files_left_out": [{"path": p, "reason": r} for p, r in files_out],
    }


def series_entry(s):
    """What the manifest and the summaries say of a series (plan.Series), used or left out."""
    return {"patient": s.patient, "uid": s.uid, "description": s.description,
            "series_number": s.number, "slices": s.slices, "where": s.where()}


def summary_lines(name, part):
    """The summary: counts, the split, then the series used and left out (SHOWN of each)."""
    used, out, files = part["series"], part["series_left_out"], part["files_left_out"]
    split = part["split"]
    patients = len({e["patient"] for e in used})
    lines = [f"data_prep: {name}: {len(used)} series of {patients} patient(s) used; "
             f"{len(out)} series and {len(files)} file(s) left out",
             f"  split: {split['note']}",
             f"  test patients: {_listed(split['test_patients'])}"]
    lines += [f"  used  {e['patient']}  {e['description']!r} #{e['series_number'] or '?'}  "
              f"{_count(e['slices'])}  {e['role']}" for e in used[:SHOWN]]
    lines += _more(len(used))
    groups = grouped_left_out(out)
    lines += [left_out_line(entries) for entries in groups[:SHOWN]]
    lines += _more(len(groups))
    lines += [f"  left out file  {f['path']}: {f['reason']}" for f in files[:SHOWN]]
    lines += _more(len(files))
    return lines


def grouped_left_out(entries):
    """Left-out series entries (series_entry with "reason") with one description and one reason,
    together, in order of the first one: a list of groups, one summary line each."""
    groups = {}
    for e in entries:
        groups.setdefault((e["description"], e["reason"]), []).append(e)
    return list(groups.values())


def left_out_line(entries):
    """The summary line of one group of grouped_left_out: the series itself, or how many."""
    e = entries[0]
    if len(entries) == 1:
        return (f"  left out  {e['patient'] or '?'}  {e['description']!r} "
                f"#{e['series_number'] or '?'} ({_count(e['slices'])}): {e['reason']}")
    patients = len({x["patient"] for x in entries})
    return (f"  left out  {len(entries)} series {e['description']!r} of {patients} patient(s): "
            f"{e['reason']}")


def _count(slices):
    return "? slices" if slices is None else f"{slices} slices"


def _listed(items, shown=8):
    return ", ".join(items[:shown]) + (f", ... ({len(items)})" if len(items) > shown else "")


def _more(n):
    return [f"  ... and {n - SHOWN} more (manifest.json)"] if n > SHOWN else []
