"""A synthetic cohort for tests and benchmarks: copies of real series under new patients.

    python -m tools.synth_cohort --out DIR --patients N [--seed S] [--study TREE ...]
                                 [--no-decoys] [--no-corrupt] [--crop PX]

Each patient is a study tree as TCIA exports it, ``<patient>/<date>/<series>/NN.dcm``, with spaces
in the folder names: a copy of the shipped ProstateX-0000 T2 axial series (data_prep/sources) and
of every DICOM series under each ``--study`` tree (e.g. the ProstateX-0001 study), each with a new
PatientID, new Study/Series/SOP Instance UIDs and its intensities scaled by a factor of the
patient's. Unless ``--no-decoys``, each patient also gets three decoys made from the T2 slices: a
localizer whose three slices have three orientations, a diffusion series with three b-values at
each of four positions, and a series of another description. Unless ``--no-corrupt``, the first
patient gets a T2 file cut short and a file of junk bytes named .dcm.

``--crop PX`` keeps the central PX x PX pixels of every slice: small, quick cohorts for tests.
Everything is derived from ``--seed`` (UIDs included): the same command writes the same bytes.
DIR must not exist yet (nothing of yours is overwritten)."""
import copy
import sys
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


def write_cohort(out, patients, seed=0, studies=(), decoys=True, corrupt=True, crop=None):
    """Write the cohort (see the module docstring); returns the patient IDs."""
    out = Path(out)
    if out.exists():
        raise DataError(f"{out}: exists; give a new folder for --out")
    t2 = read_series_files(PROSTATE_DIR).popitem()[1]
    extra = [list(read_series_files(s).values()) for s in studies]
    ids = []
    for k in range(patients):
        w = Writer(out, seed, k, crop)
        t2_folder = w.series(t2, "t2_tse_tra")
        for study in extra:
            for datasets in study:
                w.series(datasets, str(datasets[0].get("SeriesDescription", "series")))
        if decoys:
            write_decoys(w, t2)
        if corrupt and k == 0:
            write_corrupt(w, t2_folder)
        ids.append(w.patient)
    return ids


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
    args = p.parse_args(argv)
    if args.patients < 1:
        p.error("--patients must be >= 1")
    if args.crop is not None and args.crop < 1:
        p.error("--crop must be >= 1")

    def work():
        ids = write_cohort(args.out, args.patients, args.seed, args.study,
                           not args.no_decoys, not args.no_corrupt, args.crop)
        print(f"synth_cohort: {len(ids)} patients in {args.out}")
        return 0
    return guarded("synth_cohort", work)


if __name__ == "__main__":
    sys.exit(main())
