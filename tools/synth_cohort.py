"""A synthetic cohort for tests and benchmarks: copies of real series under new patients.

    python -m tools.synth_cohort --out DIR --patients N [--seed S] [--study TREE ...]
                                 [--no-decoys] [--no-corrupt] [--crop PX] [--t2-series N] [-j N]

Each patient is a study tree as TCIA exports it, ``<patient>/<date>/<series>/NN.dcm``, with spaces
in the folder names: a copy of the shipped ProstateX-0000 T2 axial series (data_prep/sources) and
of every DICOM series under each ``--study`` tree (e.g. the ProstateX-0001 study), each with a new
PatientID, new Study/Series/SOP Instance UIDs and its intensities scaled by a factor of the
patient's. Unless ``--no-decoys``, each patient also gets three decoys made from the T2 slices: a
localizer whose three slices have three orientations, a diffusion series with three b-values at
each of four positions, and a series of another description. Unless ``--no-corrupt``, the first
patient gets a T2 file cut short and a file of junk bytes named .dcm.

``--crop PX`` keeps the central PX x PX pixels of every slice: small, quick cohorts for tests.
``--t2-series N`` stops at N series described as the shipped T2 series is (``t2_tse_tra``, the
studies' included; a cohort "of N series" for benchmarks): the last patient may hold fewer.
``-j N`` writes patients in N processes (the same bytes).
Everything is derived from ``--seed`` (UIDs included): the same command writes the same bytes.
DIR must not exist yet (nothing of yours is overwritten)."""
import copy
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from core.args import command_line
from core.cli import guarded
from core.errors import DataError
from data_prep.io.files import natural_key
from data_prep.sources import PROSTATE_DIR

AXIAL, SAGITTAL, CORONAL = [1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, -1], [1, 0, 0, 0, 0, -1]
B_VALUES = (50, 400, 800)
DATE = "01-01-2020 MR prostate"


def patient_id(k):
    return f"SYN-{k + 1:04d}"


class Writer:
    """Writes one patient's series, with UIDs derived from (seed, patient, series, file)."""

    def __init__(self, out, seed, k, crop=None):
        self.seed, self.patient, self.crop = seed, patient_id(k), crop
        self.root = Path(out) / self.patient / DATE
        rng = np.random.RandomState([seed, k])
        self.gain = float(rng.uniform(0.7, 1.3))  # the patient's intensity factor
        self.study_uid = self.uid("study")
        self.series_count = 0

    def uid(self, *parts):
        return generate_uid(entropy_srcs=[str(self.seed), self.patient, *map(str, parts)])

    def series(self, datasets, description, edit=None):
        """Write copies of ``datasets`` as one new series called ``description``; ``edit(i, ds)``
        changes copy i further. Returns the series folder."""
        self.series_count += 1
        number = self.series_count
        name = description.replace('_', ' ').replace('/', '-')
        folder = self.root / f"{number}.000000-{name}-{number * 1117 % 10000}"
        folder.mkdir(parents=True)
        series_uid = self.uid("series", number)
        for i, source in enumerate(datasets):
            ds = copy.deepcopy(source)
            ds.PatientID = ds.PatientName = self.patient
            ds.StudyInstanceUID, ds.SeriesInstanceUID = self.study_uid, series_uid
            ds.SOPInstanceUID = self.uid("sop", number, i)
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.SeriesDescription = ds.ProtocolName = description
            ds.SeriesNumber, ds.InstanceNumber = number, i + 1
            scale_pixels(ds, self.gain, self.crop)
            if edit:
                edit(i, ds)
            ds.save_as(str(folder / f"1-{i + 1:02d}.dcm"))
        return folder


def scale_pixels(ds, gain, crop=None):
    """Stored values x ``gain``, rounded and clipped to BitsStored, stored uncompressed;
    ``crop``: only the central crop x crop pixels are kept."""
    dtype = ds.pixel_array.dtype
    arr = ds.pixel_array.astype(np.float64) * gain
    if crop:
        r, c = (max(0, (n - crop) // 2) for n in arr.shape)
        arr = arr[r:r + crop, c:c + crop]
        ds.Rows, ds.Columns = arr.shape
    bits = int(ds.get("BitsStored", ds.BitsAllocated))
    signed = bool(ds.get("PixelRepresentation"))
    lo, hi = (-2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    ds.PixelData = np.clip(np.round(arr), lo, hi).astype(dtype).tobytes()
    if ds.file_meta.TransferSyntaxUID.is_compressed:  # the new pixels are stored plain
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.is_implicit_VR, ds.is_little_endian = False, True
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue", "WindowCenter",
                    "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)


def read_series_files(folder):
    """{SeriesInstanceUID: [datasets in natural path order]} of every DICOM file under ``folder``."""
    found = {}
    for path in sorted(Path(folder).rglob("*"), key=lambda p: [natural_key(q) for q in p.parts]):
        if path.is_file() and not path.name.startswith("."):
            try:
                ds = pydicom.dcmread(str(path))
            except Exception:
                continue  # not DICOM: a study copy takes its images only
            found.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(ds)
    if not found:
        raise DataError(f"{folder}: no DICOM files for --study")
    return found


def write_decoys(w, t2):
    """The three decoys of the module docstring, from the T2 slices ``t2``."""
    planes = (AXIAL, SAGITTAL, CORONAL)
    w.series(t2[:3], "t2_localizer", lambda i, ds: setattr(ds, "ImageOrientationPatient", planes[i]))
    positions = [t2[8 + p] for p in range(4) for _ in B_VALUES]

    def diffusion(i, ds):
        b = B_VALUES[i % len(B_VALUES)]
        ds.ImageComments = f"b={b}"
        scale_pixels(ds, float(np.exp(-b / 1000)))
    w.series(positions, "ep2d_diff_tra", diffusion)
    w.series(t2[5:9], "tfl_3d PD ref_tra")


def write_corrupt(w, t2_folder):
    """A T2 file cut short (its header whole) and junk bytes named .dcm."""
    first = sorted(t2_folder.iterdir(), key=natural_key)[0]
    data = first.read_bytes()
    ds = pydicom.dcmread(str(first))
    ds.SOPInstanceUID = w.uid("cut")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    cut = t2_folder / "1-99.dcm"
    ds.save_as(str(cut))
    cut.write_bytes(cut.read_bytes()[:-len(data) // 3])
    (w.root / "junk.dcm").write_bytes(bytes(np.random.RandomState(w.seed).randint(0, 256, 4096,
                                                                                 dtype=np.uint8)))


def write_cohort(out, patients, seed=0, studies=(), decoys=True, corrupt=True, crop=None,
                 t2_series=None, jobs=1):
    """Write the cohort (see the module docstring); returns the patient IDs."""
    out = Path(out)
    if out.exists():
        raise DataError(f"{out}: exists; give a new folder for --out")
    t2 = read_series_files(PROSTATE_DIR).popitem()[1]
    extra = [list(read_series_files(s).values()) for s in studies]
    plans = patient_plans(t2, extra, patients, t2_series)
    global _WRITER
    _WRITER = PatientWriter(out, seed, t2, extra, decoys, corrupt, crop)
    try:
        if jobs <= 1 or len(plans) <= 1:
            return list(map(_write_patient, enumerate(plans)))
        with ProcessPoolExecutor(jobs, mp_context=get_context("fork")) as pool:
            return list(pool.map(_write_patient, enumerate(plans)))
    finally:
        _WRITER = None


_WRITER = None  # the PatientWriter of write_cohort: forked workers have it without pickling


def _write_patient(item):
    return _WRITER(item)


def patient_plans(t2, extra, patients, t2_series=None):
    """Per patient, whether each series of [t2] + the studies' is copied: all of them, until
    ``t2_series`` series described as ``t2`` is have been (then no more patients)."""
    sources = [t2] + [datasets for study in extra for datasets in study]
    described = str(t2[0].get("SeriesDescription", ""))
    plans, left = [], t2_series
    for _ in range(patients):
        if left is not None and left <= 0:
            break
        plan = []
        for datasets in sources:
            is_t2 = str(datasets[0].get("SeriesDescription", "")) == described
            plan.append(left is None or not is_t2 or left > 0)
            if left is not None and is_t2 and plan[-1]:
                left -= 1
        plans.append(plan)
    return plans


class PatientWriter:
    """Writes patient k by its plan (patient_plans)."""

    def __init__(self, out, seed, t2, extra, decoys, corrupt, crop):
        self.out, self.seed, self.t2, self.extra = out, seed, t2, extra
        self.decoys, self.corrupt, self.crop = decoys, corrupt, crop

    def __call__(self, item):
        k, plan = item
        w = Writer(self.out, self.seed, k, self.crop)
        copies = iter(plan)
        t2_folder = w.series(self.t2, "t2_tse_tra") if next(copies) else None
        for study in self.extra:
            for datasets in study:
                if next(copies):
                    w.series(datasets, str(datasets[0].get("SeriesDescription", "series")))
        if self.decoys:
            write_decoys(w, self.t2)
        if self.corrupt and k == 0 and t2_folder is not None:
            write_corrupt(w, t2_folder)
        return w.patient


def main(argv=None):
    p = command_line("tools.synth_cohort", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="a new folder for the cohort")
    p.add_argument("--patients", type=int, required=True, help="how many patients")
    p.add_argument("--seed", type=int, default=0, help="UIDs and intensity factors (default 0)")
    p.add_argument("--study", type=Path, action="append", default=[],
                   help="a study tree copied into each patient too (repeatable)")
    p.add_argument("--no-decoys", action="store_true", help="only the copied series")
    p.add_argument("--no-corrupt", action="store_true", help="no broken files")
    p.add_argument("--crop", type=int, metavar="PX", help="keep the central PX x PX pixels")
    p.add_argument("--t2-series", type=int, metavar="N", help="stop at N series described as "
                   "the shipped T2 series (t2_tse_tra), the studies' included")
    p.add_argument("-j", "--jobs", type=int, default=1, help="processes writing patients "
                   "(default 1; the same bytes)")
    args = p.parse_args(argv)
    if args.patients < 1:
        p.error("--patients must be >= 1")
    if args.crop is not None and args.crop < 1:
        p.error("--crop must be >= 1")
    if args.t2_series is not None and args.t2_series < 1:
        p.error("--t2-series must be >= 1")
    if args.jobs < 1:
        p.error("-j must be >= 1")

    def work():
        ids = write_cohort(args.out, args.patients, args.seed, args.study,
                           not args.no_decoys, not args.no_corrupt, args.crop, args.t2_series,
                           args.jobs)
        print(f"synth_cohort: {len(ids)} patients in {args.out}")
        return 0
    return guarded("synth_cohort", work)


if __name__ == "__main__":
    sys.exit(main())
