"""Your own cohort (issue 33, deliverable 1): a study tree of several patients in
(tools/synth_cohort.py: copies of the shipped ProstateX-0000 T2 series under new patients, with a
localizer of three orientations, a diffusion series of three b-values per position, a series of
another description, a file cut short and a junk file), a data set split by patient out, with every
series used and every series or file left out in the manifest, with why."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import DEFAULT, ROOT
from data_prep.__main__ import main as data_prep_main
from data_prep.cohort.build import plan_cohort
from data_prep.cohort.source import picked_indices
from data_prep.sources import PROSTATE_STUDY as STUDY
from tests.helpers import clean_env
from tools.synth_cohort import write_cohort

PATIENTS = ["SYN-0001", "SYN-0002", "SYN-0003", "SYN-0004"]
CROP = 64  # small slices: quick builds, still several patches each


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort") / "study tree"
    assert write_cohort(root, len(PATIENTS), seed=3, crop=CROP) == PATIENTS
    return root


def build(tree, out, *options):
    """data_prep on the tree into ``out``; (exit status, the manifest or None)."""
    code = data_prep_main(["--input", str(tree), "--name", "c", "--out", str(out), *options])
    path = out / "c" / "manifest.json"
    return code, json.loads(path.read_text()) if path.exists() else None


def patient_of(name):
    return name.split("_", 1)[0]


def test_the_split_is_by_patient_and_no_patient_is_on_both_sides(tree, tmp_path, capsys):
    code, m = build(tree, tmp_path, "--series", "t2_tse", "--test-patients", "1")
    assert code == 0
    split = m["cohort"]["split"]
    assert split["mode"] == "by patient" and len(split["test_patients"]) == 1
    assert sorted(split["train_patients"] + split["test_patients"]) == PATIENTS
    train = {patient_of(n) for n in m["train_slices"]}
    test = {patient_of(n) for n in m["test_slices"]}
    assert train == set(split["train_patients"]) and test == set(split["test_patients"])
    assert not train & test
    # every slice of the test patient's series is a test image, named <patient>_<series>_<slice>
    assert len(m["test_slices"]) == 19
    assert m["test_slices"][0] == f"{split['test_patients'][0]}_t2_tse_tra_0000"
    images = sorted(p.stem for p in (tmp_path / "c" / "test_images").iterdir())
    assert images == sorted(m["test_slices"])
    out = capsys.readouterr().out
    assert "by patient" in out and "4 series of 4 patient(s) used" in out


def test_every_series_and_file_left_out_is_listed_with_why(tree, tmp_path):
    code, m = build(tree, tmp_path, "--series", "t2|diff", "--test-patients", "1")
    assert code == 0
    used = m["cohort"]["series"]
    assert [(e["patient"], e["description"]) for e in used] == [(p, "t2_tse_tra") for p in PATIENTS]
    # the cut-short file of the first patient is not one of its slices
    assert [e["slices"] for e in used] == [19, 19, 19, 19]
    reasons = {}
    for e in m["cohort"]["series_left_out"]:
        reasons.setdefault(e["description"], set()).add(e["reason"])
    assert set(reasons) == {"t2_localizer", "ep2d_diff_tra", "tfl_3d PD ref_tra"}
    assert all("3 orientations" in r for r in reasons["t2_localizer"])
    assert all("3 images at one position" in r for r in reasons["ep2d_diff_tra"])
    assert all("does not match --series" in r for r in reasons["tfl_3d PD ref_tra"])
    files = {Path(e["path"]).name: e["reason"] for e in m["cohort"]["files_left_out"]}
    assert set(files) == {"1-99.dcm", "junk.dcm"}
    assert "cut short" in files["1-99.dcm"] and "not a DICOM" in files["junk.dcm"]


def test_ids_pick_those_patients_and_a_count_draws_with_the_data_seed(tree, tmp_path):
    _, m = build(tree, tmp_path / "ids", "--series", "t2_tse", "--test-patients",
                 "SYN-0004,SYN-0002")
    assert m["cohort"]["split"]["test_patients"] == ["SYN-0002", "SYN-0004"]
    assert {patient_of(n) for n in m["test_slices"]} == {"SYN-0002", "SYN-0004"}
    drawn = [build(tree, tmp_path / f"n{k}", "--series", "t2_tse", "--test-patients", "2",
                   *extra)[1]["cohort"]["split"]["test_patients"]
             for k, extra in enumerate([[], [], ["data_seed=5"]])]
    assert drawn[0] == drawn[1] and len(drawn[0]) == 2  # the same seed, the same patients
    assert len(drawn[2]) == 2 and set(drawn[2]) <= set(PATIENTS)


def test_test_slices_takes_the_central_slices_of_each_test_series(tree, tmp_path):
    _, m = build(tree, tmp_path, "--series", "t2_tse", "--test-patients", "SYN-0003",
                 "--test-slices", "3")
    assert m["test_slices"] == [f"SYN-0003_t2_tse_tra_{k:04d}" for k in (8, 9, 10)]
    assert not any(n.startswith("SYN-0003") for n in m["train_slices"])


def test_one_patient_is_split_by_its_central_slices_and_says_so(tree, tmp_path, capsys):
    code, m = build(tree / "SYN-0002", tmp_path, "--series", "t2_tse|tfl", "--test-count", "5")
    assert code == 0
    # 4 slices cannot give 5 test slices and a gap
    (short,) = [e for e in m["cohort"]["series_left_out"] if "does not match" not in e["reason"]]
    assert short["description"] == "tfl_3d PD ref_tra" and "too few to split" in short["reason"]
    assert m["cohort"]["split"]["mode"] == "one patient" and m["split"]["mode"] == "one patient"
    assert m["test_slices"] == [f"SYN-0002_t2_tse_tra_{k:04d}" for k in range(7, 12)]
    # one unused slice each side of the test block, as split_central
    assert [n[-4:] for n in m["train_slices"]] == [f"{k:04d}" for k in (*range(6), *range(13, 19))]
    assert "one patient: the central 5 slices" in capsys.readouterr().out


def test_the_plan_is_the_same_for_any_number_of_header_readers(tree):
    plans = []
    for jobs in (1, 2):
        args = _args(tree, jobs=jobs)
        train, test, part = plan_cohort(args, DEFAULT)
        plans.append((train, test, part))
    assert plans[0] == plans[1]


def _args(tree, **changes):
    from data_prep.__main__ import parse_args
    args = parse_args(["--input", str(tree), "--name", "c", "--series", "t2|diff",
                       "--test-patients", "1"])
    vars(args).update(changes)
    return args


def test_series_are_grouped_by_uid_not_by_folder(tree, tmp_path):
    """A series whose files lie in two folders is one series; a folder with two series is two."""
    import shutil
    moved = tmp_path / "tree"
    shutil.copytree(tree / "SYN-0001", moved / "SYN-0001")
    shutil.copytree(tree / "SYN-0002", moved / "SYN-0002")
    t2 = next((moved / "SYN-0001").rglob("*t2 tse tra*"))
    (moved / "elsewhere").mkdir()
    for f in sorted(t2.iterdir())[:5]:
        f.rename(moved / "elsewhere" / f.name)
    loc = next((moved / "SYN-0002").rglob("*t2 localizer*"))
    for f in loc.iterdir():
        shutil.move(str(f), str(next((moved / "SYN-0002").rglob("*t2 tse tra*")) / ("loc" + f.name)))
    _, _, part = plan_cohort(_args(moved), DEFAULT)
    assert [(e["patient"], e["slices"]) for e in part["series"]] == [("SYN-0001", 19), ("SYN-0002", 19)]
    assert any(e["description"] == "t2_localizer" and e["patient"] == "SYN-0002"
               for e in part["series_left_out"])


@pytest.mark.parametrize("options, message", [
    (["--series", "flair"], r"--series 'flair' matches none of the \d+ series"),
    (["--series", "t2_tse", "--test-patients", "SYN-0009"], r"no patient 'SYN-0009' among the 4"),
    (["--series", "t2_tse", "--test-patients", "4"], r"--test-patients 4: the cohort has 4 patients"),
    (["--series", "localizer"], r"1 series match|4 series match"),
])
def test_a_mistake_is_one_line_and_builds_nothing(tree, tmp_path, capsys, options, message):
    code, m = build(tree, tmp_path, *options)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and m is None and not (tmp_path / "c").exists()
    assert len(err) == 1 and err[0].startswith("data_prep: error: ") and re.search(message, err[0])


def test_one_patient_with_test_patients_is_refused_in_one_line(tree, tmp_path, capsys):
    code, _ = build(tree / "SYN-0002", tmp_path, "--series", "t2_tse", "--test-patients", "1")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "one patient (SYN-0002)" in err[0]


def test_a_slice_source_pickles_and_loads_its_slices(tree):
    import pickle
    train, test, _ = plan_cohort(_args(tree), DEFAULT)
    copy = pickle.loads(pickle.dumps(test[0]))
    slices = copy.load()
    assert copy == test[0] and len(slices) == 19
    assert [s.name for s in slices] == [f"{copy.stem}_{k:04d}" for k in range(19)]
    assert slices[0].image.dtype.name == "uint8" and slices[0].image.shape == (CROP, CROP)


@pytest.mark.parametrize("options, message", [
    (["--test-patients", "2"], "--test-patients goes with --series"),
    (["--series", "("], "not a regular expression"),
    (["--series", "t2", "--test-slices", "0"], "--test-slices must be >= 1"),
])
def test_options_are_refused_in_one_line(tree, tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) as exit_:
        build(tree, tmp_path, *options)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and message in err[0]


def test_a_volume_takes_its_patient_from_the_map(tmp_path):
    import nibabel as nib
    import numpy as np
    rng = np.random.RandomState(0)
    for k in range(3):
        folder = tmp_path / "vols" / f"p{k}"
        folder.mkdir(parents=True)
        nib.save(nib.Nifti1Image(rng.randint(0, 500, (48, 48, 6)).astype(np.int16), np.eye(4)),
                 str(folder / "t2 ax.nii.gz"))
    (tmp_path / "map.csv").write_text("path,patient\n" + "".join(
        f"vols/p{k}/t2 ax.nii.gz,P{k}\n" for k in range(2)))
    code, m = build(tmp_path / "vols", tmp_path / "out", "--series", "t2", "--patients",
                    str(tmp_path / "map.csv"), "--test-patients", "P1")
    assert code == 0
    assert [(e["patient"], e["role"]) for e in m["cohort"]["series"]] == [("P0", "train"),
                                                                          ("P1", "test")]
    (left,) = m["cohort"]["series_left_out"]
    assert left["patient"] == "" and "--patients" in left["reason"]
    assert {patient_of(n) for n in m["test_slices"]} == {"P1"}


def test_picked_indices_match_split_central():
    from data_prep.readers import Slice
    from data_prep.sources import split_central
    slices = [Slice(str(k), None, "", k) for k in range(19)]
    train, test, _ = split_central(slices, 5, 1)
    assert picked_indices(19, ("central", 5)) == [s.index for s in test]
    assert picked_indices(19, ("around", 5, 1)) == [s.index for s in train]
    assert picked_indices(3, ("central", 5)) == [0, 1, 2]


@pytest.mark.slow
def test_make_data_builds_a_cohort(tree, tmp_path):
    """make data IN=... NAME=... SERIES=... TEST_PATIENTS=... JOBS=...: the summary, then the set
    (in a data root of the test's own: DATA_ROOT patched through a wrapper module)."""
    out = tmp_path / "data"
    wrapper = tmp_path / "py"
    wrapper.write_text(f"#!/bin/bash\nexec {sys.executable} \"$@\" --out={out}\n")
    wrapper.chmod(0o755)
    proc = subprocess.run(["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "data",
                           f"IN={tree}", "NAME=c", "SERIES=t2_tse", "TEST_PATIENTS=SYN-0001",
                           "JOBS=2", f"PY={wrapper}"], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "4 series of 4 patient(s) used" in proc.stdout and "left out file" in proc.stdout
    m = json.loads((out / "c" / "manifest.json").read_text())
    assert m["cohort"]["split"]["test_patients"] == ["SYN-0001"]


@pytest.mark.slow
def test_the_prostatex_study_gives_its_two_t2_axial_series(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "data_prep", "--input", str(STUDY), "--name",
                           "px1", "--series", "t2_tse_tra", "--out", str(tmp_path)], cwd=ROOT,
                          env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "px1" / "manifest.json").read_text())
    assert [e["series_number"] for e in m["cohort"]["series"]] == ["6", "10"]
    assert len(m["cohort"]["series_left_out"]) == 9 and m["cohort"]["split"]["mode"] == "one patient"


def _volume_tree(root):
    """One patient's volumes in every layout a header can have: a NIfTI pair (.hdr + .img), a
    MetaImage with its voxels apart (.mhd + .raw), a NRRD with its voxels apart (.nhdr + .raw,
    gzip: .raw.gz) and a single file of each format; the voxel axes are 45 x 39 x 36 (x, y, z),
    the NIfTI pair's turned so that its first voxel axis runs along RAS+ axis 2."""
    import nibabel as nib
    import numpy as np
    import SimpleITK as sitk
    root.mkdir(parents=True)
    data = (np.arange(45 * 39 * 36) % 1000).astype(np.int16).reshape(45, 39, 36)
    turned = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    nib.save(nib.Nifti1Pair(data, turned), str(root / "t2 pair.hdr"))
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(root / "t2 single.nii.gz"))
    image = sitk.GetImageFromArray(data.T.copy())  # SimpleITK's arrays are (z, y, x)
    sitk.WriteImage(image, str(root / "t2 meta.mhd"))
    sitk.WriteImage(image, str(root / "t2 nrrd.nhdr"), True)
    sitk.WriteImage(image, str(root / "t2 one.mha"))
    return sorted(p.name for p in root.iterdir())


def test_a_header_and_its_voxel_file_are_one_series_named_by_the_header(tmp_path):
    files = _volume_tree(tmp_path / "vols")
    assert {"t2 pair.img", "t2 meta.raw", "t2 nrrd.raw.gz"} <= set(files)  # the voxel files
    (tmp_path / "map.csv").write_text("".join(f"vols/{n},P{k}\n" for k, n in enumerate(files)))
    code, m = build(tmp_path / "vols", tmp_path / "out", "--series", "t2", "--patients",
                    str(tmp_path / "map.csv"), "--test-patients", "1")
    assert code == 0
    assert sorted(Path(e["where"]).name for e in m["cohort"]["series"]) == [
        "t2 meta.mhd", "t2 nrrd.nhdr", "t2 one.mha", "t2 pair.hdr", "t2 single.nii.gz"]
    assert m["cohort"]["series_left_out"] == [] and m["cohort"]["files_left_out"] == []


@pytest.mark.parametrize("axis, pair, others", [(2, 45, 36), (0, 36, 45), (1, 39, 39)])
def test_a_volume_counts_its_slices_along_the_axis_from_its_header(tmp_path, capsys, axis, pair,
                                                                   others):
    """The summary and the manifest give a volume's slices, counted from its header along
    --axis as the build slices it; the build then gives exactly that many."""
    files = _volume_tree(tmp_path / "vols")
    (tmp_path / "map.csv").write_text("".join(f"vols/{n},P{k}\n" for k, n in enumerate(files)))
    code, m = build(tmp_path / "vols", tmp_path / "out", "--series", "t2", "--patients",
                    str(tmp_path / "map.csv"), "--axis", str(axis), "--test-patients", "1")
    assert code == 0
    counts = {Path(e["where"]).name: e["slices"] for e in m["cohort"]["series"]}
    assert counts == {"t2 pair.hdr": pair, "t2 meta.mhd": others, "t2 nrrd.nhdr": others,
                      "t2 one.mha": others, "t2 single.nii.gz": others}
    out = capsys.readouterr().out
    assert "? slices" not in out and f"'t2 pair.hdr' #?  {pair} slices" in out
    built = len(m["train_slices"]) + len(m["test_slices"])
    assert built == sum(counts.values())


def test_a_volume_whose_header_cannot_be_read_is_a_file_left_out(tmp_path):
    """Planning reads the header: a broken volume, or half a pair, is left out with why (the
    build would fail on it) and the others are used."""
    files = _volume_tree(tmp_path / "vols")
    (tmp_path / "vols" / "t2 broken.nii").write_bytes(b"not a NIfTI header" * 30)
    pair_header = (tmp_path / "vols" / "t2 pair.hdr").read_bytes()
    (tmp_path / "vols" / "t2 half.hdr").write_bytes(pair_header)  # without its .img
    (tmp_path / "map.csv").write_text("".join(f"vols/{n},P{k}\n" for k, n in enumerate(files)))
    code, m = build(tmp_path / "vols", tmp_path / "out", "--series", "t2", "--patients",
                    str(tmp_path / "map.csv"), "--test-patients", "1")
    assert code == 0 and len(m["cohort"]["series"]) == 5
    left = {Path(e["path"]).name: e["reason"] for e in m["cohort"]["files_left_out"]}
    assert set(left) == {"t2 broken.nii", "t2 half.hdr"}
    assert "cannot read NIfTI" in left["t2 broken.nii"]
    assert "t2 half.img is missing" in left["t2 half.hdr"]


def test_the_summary_parts_other_commands_reuse_are_public(tree):
    """The tree upscale (inference/upscale_tree.py) words its refusal and its left-out lines as
    `make data` does, through these public names; no namespace of data_prep's options needed."""
    from data_prep.cohort.build import why_nothing_is_used
    from data_prep.cohort.plan import find_series
    from data_prep.cohort.summary import grouped_left_out, left_out_line, series_entry
    from data_prep.cohort.walk import read_infos, tree_files
    series, files_out = find_series(read_infos(tree_files([tree])), re.compile("flair"), {})
    line = why_nothing_is_used([tree], "flair", series, files_out)
    assert line.startswith(f"--series 'flair' matches none of the {len(series)} series under")
    groups = grouped_left_out([series_entry(s) | {"reason": s.reason} for s in series])
    assert len(groups) == 4 and all(len(g) == len(PATIENTS) for g in groups)
    assert left_out_line(groups[0]).startswith(f"  left out  {len(PATIENTS)} series ")


def test_one_patient_leaves_out_a_volume_too_short_to_split_before_building(tmp_path):
    """With its slices known from the header, a volume too short for the one-patient split is
    left out with why, as a DICOM series is, and the others build (it used to stop the build)."""
    import nibabel as nib
    import numpy as np
    files = _volume_tree(tmp_path / "vols")
    short = (np.arange(40 * 40 * 6) % 500).astype(np.int16).reshape(40, 40, 6)
    nib.save(nib.Nifti1Image(short, np.eye(4)), str(tmp_path / "vols" / "t2 short.nii.gz"))
    (tmp_path / "map.csv").write_text("".join(f"vols/{n},P1\n"
                                              for n in files + ["t2 short.nii.gz"]))
    code, m = build(tmp_path / "vols", tmp_path / "out", "--series", "t2", "--patients",
                    str(tmp_path / "map.csv"), "--test-count", "5")
    assert code == 0 and len(m["cohort"]["series"]) == 5
    (left,) = m["cohort"]["series_left_out"]
    assert left["description"] == "t2 short.nii.gz" and left["slices"] == 6
    assert "6 slices are too few to split" in left["reason"]
