"""Every DICOM file the project writes says that it is derived and from what (issue 34, Deliver 1:
``data_prep.io.dicom_derived``), and a real validator, dciodvfy (Debian's dicom3tools), finds no
error or warning in it that its input does not have (Deliver 2): on ProstateX-0000 upscaled, on a
thick-slice output, on a CT and on an MG."""
import re
import shutil
import subprocess
from datetime import datetime, timezone

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from core.config import ROOT
from core.outputs import PRODUCER
from core.version import software_version
from data_prep.io.dicom_derived import Derivation, mark_derived, series_number
from data_prep.thick_scan import read_scan, write_scan
from data_prep.sources import PROSTATE_DIR
from inference import upscale
from tests.mammogram import write_mammogram

PROSTATE = PROSTATE_DIR
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DCIODVFY = shutil.which("dciodvfy")
needs_dciodvfy = pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools, "
                                    "installed by make setup) is not on PATH")


def identity(x):
    return x


# ------------------------------------------------------------------------ the attributes

def test_series_number_rule():
    in_plane, through = Derivation(3), Derivation(3, through_plane=True)
    assert series_number(4, in_plane) == 4003
    assert series_number("4", through) == 4103
    assert series_number(4, Derivation(2)) == 4002  # each method and factor its own number
    assert series_number(4, in_plane, used=[4, 4003, 4004]) == 4005  # the study's are stepped over
    assert series_number(None, in_plane) == 999_999_003  # no source number: a block of its own
    assert series_number(4003, in_plane) == 4_003_003
    assert series_number(4_003_003, in_plane) <= 2 ** 31 - 1  # an IS value never overflows


def test_description_keeps_the_source_s_and_fits_a_lo():
    ds = pydicom.Dataset()
    ds.SeriesDescription = "x" * 64
    mark_derived(ds, Derivation(3), [], "test")
    assert ds.SeriesDescription == "x" * 58 + " SR x3"
    ds = pydicom.Dataset()
    mark_derived(ds, Derivation(2, through_plane=True), [], "test")
    assert ds.SeriesDescription == "SR z x2" and ds.ImageType == ["DERIVED", "SECONDARY"]


def test_sources_without_uids_are_not_referenced():
    """A file read without its SOP UIDs (a bare dataset) is not referenced, and the copy does not
    keep the source's own Source Image Sequence, which names other images."""
    ds, source = pydicom.Dataset(), pydicom.Dataset()
    ds.SourceImageSequence = Sequence([Dataset()])
    mark_derived(ds, Derivation(3), [source], "test")
    assert "SourceImageSequence" not in ds


def test_creation_time_is_the_given_one():
    ds = pydicom.Dataset()
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    mark_derived(ds, Derivation(3), [], "test", now=when)
    assert ds.ContributingEquipmentSequence[0].ContributionDateTime == "20260102030405+0000"
    local = when.astimezone()  # DA and TM hold the local time
    assert (ds.InstanceCreationDate, ds.InstanceCreationTime) == (local.strftime("%Y%m%d"),
                                                                  local.strftime("%H%M%S"))
    ds = pydicom.Dataset()
    ds.TimezoneOffsetFromUTC = "-0500"  # the instance's times are in this zone
    mark_derived(ds, Derivation(3), [], "test", now=when)
    assert (ds.InstanceCreationDate, ds.InstanceCreationTime) == ("20260101", "220405")
    assert ds.ContributingEquipmentSequence[0].ContributionDateTime == "20260101220405-0500"


def assert_derived(out, sources, suffix, number, description):
    """``out`` (a written dataset) says it is derived from ``sources`` as the issue asks."""
    first = sources[0]
    old_type = [str(v) for v in first.get("ImageType", [])]
    assert list(out.ImageType) == ["DERIVED", "SECONDARY"] + old_type[2:]
    assert out.SeriesDescription == f"{first.get('SeriesDescription', '')} {suffix}".strip()
    assert int(out.SeriesNumber) == number != int(first.get("SeriesNumber", -1))
    assert out.DerivationDescription == description
    code = out.DerivationCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == \
        ("113085", "DCM", "Spatial resampling")
    refs = [(r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID) for r in out.SourceImageSequence]
    assert refs == [(s.SOPClassUID, s.SOPInstanceUID) for s in sources]
    purpose = out.SourceImageSequence[0].PurposeOfReferenceCodeSequence[0]
    assert (purpose.CodeValue, purpose.CodingSchemeDesignator) == ("121322", "DCM")
    versions = out.SoftwareVersions
    assert (versions if isinstance(versions, str) else versions[-1]) == software_version()
    equipment = out.ContributingEquipmentSequence[-1]
    assert equipment.Manufacturer == PRODUCER and equipment.SoftwareVersions == software_version()
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    created = datetime.strptime(out.InstanceCreationDate + out.InstanceCreationTime, "%Y%m%d%H%M%S")
    assert abs((datetime.now() - created).total_seconds()) < 600  # written just now
    for keyword in ("StudyInstanceUID", "PatientID", "Modality", "SOPClassUID"):
        assert out.get(keyword) == first.get(keyword), keyword
    assert out.SOPInstanceUID not in {s.SOPInstanceUID for s in sources}


# ------------------------------------------------------------------------ the validator

def messages(path):
    """dciodvfy's errors and warnings about ``path``, normalised: a value quoted after "=" is
    dropped (UIDs and positions differ between an input and its output, the message does not)."""
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True)
    lines = (result.stdout + result.stderr).splitlines()
    return {re.sub(r"\s+", " ", re.sub(r"= <[^>]*>", "= <>", line)).strip()
            for line in lines if re.search(r"\b(Error|Warning)\b", line)}


def new_messages(src, out):
    """What dciodvfy says about ``out`` and not about ``src`` (the project's mark is a standard
    attribute, a Contributing Equipment item: it draws no message of its own)."""
    return messages(out) - messages(src)


@pytest.mark.slow
@needs_dciodvfy
def test_prostate_upscaled_is_derived_and_valid(tmp_path):
    upscale.upscale_path(PROSTATE, tmp_path / "sr", identity, scale=3)
    sources = sorted(PROSTATE.iterdir())
    assert sorted(p.name for p in (tmp_path / "sr").iterdir()) == [p.name for p in sources]
    for src in sources:
        out = tmp_path / "sr" / src.name
        ds, old = pydicom.dcmread(str(out)), pydicom.dcmread(str(src))
        assert_derived(ds, [old], "SR x3", 4003, ds.DerivationDescription)
        assert ds.DerivationDescription.startswith("SRCNN x3 super-resolution")
        assert old.SeriesDescription == "t2_tse_tra" and ds.SeriesDescription == "t2_tse_tra SR x3"
    for src in sources[:: len(sources) // 3]:  # a few: every file is written the same way
        assert new_messages(src, tmp_path / "sr" / src.name) == set()


@pytest.mark.slow
@needs_dciodvfy
def test_thick_slice_output_is_derived_from_every_slice_and_valid(tmp_path):
    scan = read_scan(PROSTATE)
    factor = 2
    fine = np.repeat(scan.values, factor, axis=2)  # what the net computes does not matter here
    write_scan(tmp_path / "fine", scan, fine, factor, "through-plane x2 super-resolution (test)")
    outs = sorted((tmp_path / "fine").iterdir())
    assert len(outs) == factor * scan.values.shape[2]
    sources = [ds for _, ds in scan.source]  # every slice: the planes the net ran on cross them all
    for n in (0, len(outs) // 2, len(outs) - 1):
        ds = pydicom.dcmread(str(outs[n]))
        assert_derived(ds, sources, "SR z x2", 4102, "through-plane x2 super-resolution (test)")
        assert ds.SeriesDescription == "t2_tse_tra SR z x2"
        lies_in = sources[n // factor].filename  # the thick slice the new one is a copy of
        assert new_messages(lies_in, outs[n]) == set()


def write_ct(path, shape=(24, 20)):
    """A small CT slice as a scanner writes one: CT Image Storage, 12 bits signed in 16, HU by
    RescaleSlope/Intercept, the modules the CT Image IOD asks for."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CT_IMAGE_STORAGE, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^CT", "CT-1", "", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = "CT", 2, 1, "abdomen"
    ds.Manufacturer, ds.PositionReferenceIndicator, ds.PatientOrientation = "test", "", ""
    ds.PatientPosition, ds.BodyPartExamined = "HFS", "ABDOMEN"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ContentDate, ds.ContentTime, ds.AcquisitionNumber = "20260101", "120000", 1
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [-100, -100, 0], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness, ds.KVP = [0.8, 0.8], 2.5, 120
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    pixels = np.random.default_rng(0).integers(0, 2048, shape).astype("<i2")
    ds.PixelData = pixels.tobytes()
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.save_as(str(path), write_like_original=False)


def write_mg(path, shape=(40, 32)):
    """A small mammogram for presentation (tests.mammogram's, uncompressed) with the attributes
    the Digital Mammography X-Ray Image IOD asks for that it leaves out."""
    write_mammogram(path, shape, jpeg2000=False)
    ds = pydicom.dcmread(str(path))
    ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName = "", "F", ""
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
    ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer, ds.SeriesDescription = 1, 1, "test", "L CC"
    ds.PresentationIntentType, ds.ImageType = "FOR PRESENTATION", ["ORIGINAL", "PRIMARY", ""]
    ds.PatientOrientation = ["A", "R"]
    ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LOG", 1
    ds.PresentationLUTShape, ds.LossyImageCompression, ds.BurnedInAnnotation = "IDENTITY", "00", "NO"
    ds.DetectorType, ds.PositionerType, ds.OrganExposed = "DIRECT", "MAMMOGRAPHIC", "BREAST"
    ds.AnatomicRegionSequence = Sequence([code("76752008", "SCT", "Breast")])
    view = code("399162004", "SCT", "cranio-caudal")
    view.ViewModifierCodeSequence = Sequence([])
    ds.ViewCodeSequence, ds.AcquisitionContextSequence = Sequence([view]), Sequence([])
    ds.save_as(str(path), write_like_original=False)


def code(value, scheme, meaning):
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


@pytest.mark.slow
@needs_dciodvfy
@pytest.mark.parametrize("modality, write, number", [("CT", write_ct, 2002), ("MG", write_mg, 1002)])
def test_ct_and_mg_upscaled_are_derived_and_valid(tmp_path, modality, write, number):
    src = tmp_path / "in.dcm"
    write(src)
    assert pydicom.dcmread(str(src)).Modality == modality
    upscale.upscale_path(src, tmp_path / "out.dcm", identity, scale=2)
    old, ds = pydicom.dcmread(str(src)), pydicom.dcmread(str(tmp_path / "out.dcm"))
    assert_derived(ds, [old], "SR x2", number, ds.DerivationDescription)
    assert new_messages(src, tmp_path / "out.dcm") == set()


@pytest.mark.slow
@needs_dciodvfy
def test_the_comparison_sees_a_broken_derived_attribute(tmp_path):
    """The check can fail: the validator reads the attributes that say the file is derived (an
    item without its code meaning, a reference without its instance) and the comparison reports
    what the input did not draw."""
    write_ct(tmp_path / "in.dcm")
    upscale.upscale_path(tmp_path / "in.dcm", tmp_path / "out.dcm", identity, scale=2)
    ds = pydicom.dcmread(str(tmp_path / "out.dcm"))
    del ds.DerivationCodeSequence[0].CodeMeaning
    del ds.SourceImageSequence[0].ReferencedSOPInstanceUID
    ds.save_as(str(tmp_path / "out.dcm"))
    found = new_messages(tmp_path / "in.dcm", tmp_path / "out.dcm")
    assert any("<CodeMeaning>" in m for m in found) and \
        any("<ReferencedSOPInstanceUID>" in m for m in found), found


def test_make_setup_installs_the_validator():
    listed = (ROOT / "tools" / "setup" / "debian_packages.txt").read_text().splitlines()
    assert "dicom3tools" in [line.split("#")[0].strip() for line in listed]
