"""From file records (walk.py) to a plan: the series, each used or left out with why, and the split
by patient.

Series: DICOM files are grouped by SeriesInstanceUID wherever they lie; a volume file is one
series (a header with its voxels in a file of their own, .hdr+.img, .mhd+.raw, .nhdr+.raw: the
header file), its slices along ``--axis`` counted from its header. A series is used when its
description (SeriesDescription, else ProtocolName; a volume's file name) matches ``--series``
(case-insensitive ``re.search``), it has a patient, and its slices are one stack: one
orientation and one image per position. Several matching series of one patient are all used.

Split: by patient, no patient on both sides. ``--test-patients N`` draws N patients with
cfg.data_seed (numpy RandomState over the sorted patient IDs); IDs name them; by default a fifth
of the patients (at least one). Each test patient's series give their central ``--test-slices``
slices (default all) as test images, nothing for training. With one patient the split is the
central slices of each series (split_central's, with its gap), as for one series today.
"""
import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import DataError
from data_prep.io.dicom_series import group_series, images_per_position, orientations
from data_prep.io.files import natural_key

from .source import SeriesSource
from .walk import without_data_files


@dataclass
class Series:
    """One series of the tree: used (``reason`` empty) or left out (``reason`` says why)."""
    kind: str                   # "dicom" or "volume"
    uid: str                    # SeriesInstanceUID; a volume's path
    paths: list
    description: str
    patient: str
    number: str = ""            # SeriesNumber
    slices: int = None          # images (DICOM frames) from the headers; a volume's along --axis
    reason: str = ""
    role: str = ""              # "train", "test", "train+test" (one patient) or "unused"
    stem: str = ""              # <patient>_<series>, file-name-safe
    sources: list = field(default_factory=list)

    def where(self):
        """The folder (DICOM) or file (volume) that holds it, for people to find it."""
        folders = sorted({str(Path(p).parent) for p in self.paths})
        return str(self.paths[0]) if self.kind == "volume" else folders[0] if len(folders) == 1 \
            else f"{folders[0]} (+{len(folders) - 1} folders)"


def safe(text):
    """``text`` as a file-name-safe word: runs of other characters become '-'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-.") or "x"


def read_patient_map(path):
    """{resolved path: patient} from a CSV of ``path,patient`` rows (a first row
    ``path,patient`` is a header; relative paths are relative to the CSV's folder)."""
    path = Path(path)
    try:
        rows = list(csv.reader(path.read_text().splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read --patients ({exc})")
    found = {}
    for number, row in enumerate(rows, 1):
        if not row or number == 1 and [c.strip().lower() for c in row] == ["path", "patient"]:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{path}: line {number}: want 'path,patient', got {','.join(row)!r}")
        file = Path(row[0].strip())
        found[str((file if file.is_absolute() else path.parent / file).resolve())] = row[1].strip()
    return found


def series_pattern(regex):
    """The ``--series`` rule, the one home of it (the cohort build, the tree upscale, the PACS
    client): ``regex`` compiled case-insensitive, to be searched anywhere in a description
    (:func:`description_matches`). re.error for a bad regex."""
    return re.compile(regex, re.IGNORECASE)


def description_matches(pattern, description):
    """Whether a series' description (SeriesDescription, else ProtocolName; a volume's file
    name) matches ``pattern`` (:func:`series_pattern`, or a regex string): searched, not matched
    in full, so ``t2`` finds ``t2_tse_tra``."""
    if isinstance(pattern, str):
        pattern = series_pattern(pattern)
    return pattern.search(str(description or "")) is not None


def find_series(infos, pattern, patient_map, axis=2):
    """([Series], [(path, reason)] files left out) from file records, in the walk's order; a
    volume's slices are counted along RAS+ ``axis`` (the build's ``--axis``)."""
    infos = without_data_files(infos)
    files_out = [(str(i.path), i.reason) for i in infos if i.kind == "skip"]
    dicoms = [(i.path, i) for i in infos if i.kind == "dicom"]
    series = [_dicom_series(uid, items) for uid, items in group_series(dicoms).items()]
    series += [_volume_series(i, patient_map, axis) for i in infos if i.kind == "volume"]
    for s in series:
        if not s.reason:
            s.reason = _mismatch(s, pattern)
        if not s.reason and s.kind == "dicom":
            s.reason = _not_one_stack(s)
    return series, files_out


def _dicom_series(uid, items):
    first = items[0][1]
    description = first.get("SeriesDescription") or first.get("ProtocolName") or ""
    patients = sorted({str(i.get("PatientID", "")) for _, i in items})
    slices = sum(int(i.get("NumberOfFrames", 1) or 1) for _, i in items)
    s = Series("dicom", uid, [p for p, _ in items], description, patients[0],
               str(first.get("SeriesNumber", "")), slices)
    s.items = items
    if len(patients) > 1:
        s.reason = f"its files name {len(patients)} patients ({', '.join(patients[:3])})"
    elif not patients[0]:
        s.reason = "no PatientID: its patient is unknown"
    return s


def _volume_series(info, patient_map, axis):
    path = info.path
    patient = patient_map.get(str(Path(path).resolve()), "")
    s = Series("volume", str(path), [path], Path(path).name, patient,
               slices=info.header["slices_along"][axis])
    if not patient:
        s.reason = "a volume's patient is unknown: list it in --patients map.csv (path,patient)"
    return s


def _mismatch(s, pattern):
    what = {"dicom": "SeriesDescription/ProtocolName", "volume": "file name"}[s.kind]
    if description_matches(pattern, s.description):
        return ""
    return f"{what} {s.description!r} does not match --series"


def _not_one_stack(s):
    """Why a DICOM series' slices are not one stack, from its headers; '' when they are."""
    found = orientations(s.items)
    if len(found) > 1:
        return (f"its slices have {len(found)} orientations (ImageOrientationPatient; a "
                "localizer's planes): not one stack, never mixed")
    most, positions = images_per_position(s.items)
    if most > 1:
        return (f"it holds up to {most} images at one position ({len(s.items)} files at "
                f"{positions} positions: b-values, echoes or repeats): never averaged or mixed")
    return ""


# ---------------------------------------------------------------------------- the split

@dataclass
class Split:
    mode: str                   # "by patient" or "one patient"
    train: list
    test: list
    note: str


def choose_test_patients(patients, wanted, seed):
    """The test patients among sorted ``patients``: ``wanted`` is None (a fifth, at least one),
    a count, or a list of IDs. DataError for a bad count or an unknown ID."""
    if len(patients) == 1:
        raise DataError(f"--test-patients: the series used are of one patient ({patients[0]}), "
                        "who cannot be both: leave --test-patients out to split its slices")
    if wanted is None:
        wanted = max(1, len(patients) // 5)
    if isinstance(wanted, int):
        if not 1 <= wanted < len(patients):
            raise DataError(f"--test-patients {wanted}: the cohort has {len(patients)} patients; "
                            f"give 1 to {len(patients) - 1} (at least one patient must train)")
        picked = np.random.RandomState(seed).choice(len(patients), wanted, replace=False)
        return sorted(patients[k] for k in picked)
    unknown = [p for p in wanted if p not in patients]
    if unknown:
        shown = ", ".join(patients[:5]) + (", ..." if len(patients) > 5 else "")
        raise DataError(f"--test-patients: no patient {unknown[0]!r} among the "
                        f"{len(patients)} patients of the series used ({shown})")
    if len(set(wanted)) >= len(patients):
        raise DataError(f"--test-patients names all {len(patients)} patients: "
                        "at least one patient must train")
    return sorted(set(wanted))


def split(used, wanted, test_slices, seed, gap, one_patient_test):
    """Give each used series its role and slice sources; returns the Split.

    ``test_slices``: central slices per test series (None: all); ``one_patient_test``: test slices
    per series when there is one patient (``--test-slices`` or ``--test-count``); then a series
    too short for that split is left out (its ``reason`` set)."""
    patients = sorted({s.patient for s in used}, key=natural_key)
    if len(patients) == 1 and wanted is None:
        for s in used:
            if s.slices is not None and s.slices < one_patient_test + 2 * gap + 1:
                s.reason = (f"{s.slices} slices are too few to split (one patient): "
                            f"{one_patient_test} test slices, {gap} unused each side and one "
                            "to train")
                continue
            s.role = "train+test"
            s.sources = [("test", ("central", one_patient_test)),
                         ("train", ("around", one_patient_test, gap))]
        return Split("one patient", patients, patients,
                     f"one patient: the central {one_patient_test} slices of each series are the "
                     f"test images, {gap} unused slice(s) each side, the rest train")
    test = choose_test_patients(patients, wanted, seed)
    for s in used:
        if s.patient in test:
            s.role = "test"
            s.sources = [("test", ("all",) if test_slices is None else ("central", test_slices))]
        else:
            s.role = "train"
            s.sources = [("train", ("all",))]
    k = "all" if test_slices is None else f"the central {test_slices}"
    return Split("by patient", [p for p in patients if p not in test], test,
                 f"by patient: {len(test)} test and {len(patients) - len(test)} training patients, "
                 f"none on both sides; {k} slices of each test series are test images")


def name_series(used):
    """Give each used series its stem <patient>_<series>, unique in the data set: the series is
    its description, with its SeriesNumber where one patient has several alike (then a count)."""
    alike = {}
    for s in used:
        alike[(s.patient, s.description)] = alike.get((s.patient, s.description), 0) + 1
    taken = set()
    for s in used:
        numbered = alike[(s.patient, s.description)] > 1 and s.number
        stem = safe(f"{s.patient}_{s.description}" + (f"-{s.number}" if numbered else ""))
        base, n = stem, 2
        while stem in taken:
            stem, n = f"{base}-{n}", n + 1
        taken.add(stem)
        s.stem = stem


def slice_sources(used, rule, axis):
    """(train sources, test sources) of the used series, in their order."""
    out = {"train": [], "test": []}
    for s in used:
        for role, pick in s.sources:
            paths = tuple(str(p) for p in _ordered_paths(s))
            out[role].append(SeriesSource(f"{s.stem}.{role}", s.stem, s.kind, paths, pick, rule,
                                          axis))
    return out["train"], out["test"]


def _ordered_paths(s):
    return s.paths if s.kind == "volume" else sorted(s.paths, key=lambda p: natural_key(p))
