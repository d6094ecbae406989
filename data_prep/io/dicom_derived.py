"""What makes a DICOM file this project writes say that it is derived, not an acquisition, and
from what (DICOM PS3.3 and PS3.16; docs/dicom.md says what is set and why):

    ImageType               DERIVED\\SECONDARY, the later values kept (General Image Module)
    SeriesDescription       the source's, then "SR x3" (in-plane) or "SR z x3" (through-plane)
    SeriesNumber            :func:`series_number`: never the source's, nor one the study uses
    DerivationCodeSequence  (113085, DCM, "Spatial resampling"), of CID 7203 Image Derivation
    SourceImageSequence     each source instance, purpose (121322, DCM, "Source image for image
                            processing operation") of CID 7202
    SoftwareVersions        the source's, then "medsr-caffe <version>" (``core.version``)
    ContributingEquipmentSequence  one more item: this project as (109102, DCM, "Processing
                            Equipment") of CID 7005, with its version, when and what it did
    InstanceCreationDate/Time  when the file was made (SOP Common Module), in the instance's
                            Timezone Offset From UTC where it has one

DerivationDescription and the new UIDs are set by ``data_prep.io.dicom.write``, which calls
:func:`mark_derived`. Dates of the acquisition (Study, Series, Acquisition, Content) are kept:
they say when the pixels the output is made of were acquired.
"""
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from core.outputs import PRODUCER
from core.version import software_version

__all__ = ["Derivation", "series_number", "mark_derived", "DERIVATION_CODE", "SOURCE_PURPOSE",
           "PROCESSING_EQUIPMENT"]

# (code value, coding scheme designator, code meaning), as PS3.16 lists them
DERIVATION_CODE = ("113085", "DCM", "Spatial resampling")  # CID 7203 Image Derivation
SOURCE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")  # CID 7202
PROCESSING_EQUIPMENT = ("109102", "DCM", "Processing Equipment")  # CID 7005

SERIES_BLOCK = 1000  # derived series of source n are numbered n * 1000 + k
THROUGH_PLANE_OFFSET = 100  # k of a through-plane series: 100 + factor; in-plane: the factor
NO_SOURCE_BLOCK = 999_999  # the block of a source without a SeriesNumber
IS_MAX = 2 ** 31 - 1  # an IS value is a signed 32-bit integer
LO_MAX, ST_MAX = 64, 1024  # characters a LO, an ST value holds


@dataclass(frozen=True)
class Derivation:
    """What the project did to the pixels: super-resolution by ``factor``, in-plane (``make
    upscale``) or along the slice axis (``make thickslice``)."""
    factor: int
    through_plane: bool = False

    @property
    def suffix(self):
        """What SeriesDescription ends with: "SR x3" or "SR z x3" (z: the slice axis)."""
        return f"SR {'z ' if self.through_plane else ''}x{self.factor:g}"

    @property
    def number_offset(self):
        """k of :func:`series_number`: distinct for each method and factor up to 99."""
        offset = (THROUGH_PLANE_OFFSET if self.through_plane else 0) + int(round(self.factor))
        return min(max(offset, 1), SERIES_BLOCK - 1)


def series_number(source, derivation, used=()):
    """The derived series' SeriesNumber: source * 1000 + k, k = the factor in-plane, 100 + the
    factor through-plane (``Derivation.number_offset``), so series 4 upscaled x3 is 4003 and
    refined along its slices x3 is 4103. Scanners number their series far below source * 1000,
    and each method and factor has its own number; ``used`` (the study's numbers, where known:
    a PACS knows them) are stepped over, one by one. A source without a number (or with one
    that is not an integer) takes the block 999999; a block that would overflow an IS value (a
    derived series of a derived series of ...) is taken modulo."""
    try:
        source = abs(int(source))
    except (TypeError, ValueError):
        source = NO_SOURCE_BLOCK
    block = source % ((IS_MAX - SERIES_BLOCK) // SERIES_BLOCK)
    number = block * SERIES_BLOCK + derivation.number_offset
    used = {int(n) for n in used}
    while number in used:
        number += 1
    return number


def mark_derived(ds, derivation, sources, description, used_series_numbers=(), now=None):
    """Set the attributes of the module docstring in ``ds`` (the output's dataset, a copy of
    its first source: its other attributes are the source's). ``sources``: the datasets the
    output's pixels were computed from; ``now``: the creation time (a ``datetime``, the clock's
    by default)."""
    now = _in_dataset_zone(ds, (now or datetime.now()).astimezone())
    ds.ImageType = _derived_type(ds.get("ImageType"))
    ds.walk(_derived_frame_type)
    ds.SeriesDescription = _described(ds.get("SeriesDescription"), derivation.suffix)
    ds.SeriesNumber = series_number(ds.get("SeriesNumber"), derivation, used_series_numbers)
    ds.DerivationCodeSequence = Sequence([_code(*DERIVATION_CODE)])
    references = [_reference(s) for s in sources if "SOPClassUID" in s and "SOPInstanceUID" in s]
    if references:
        ds.SourceImageSequence = Sequence(references)
    elif "SourceImageSequence" in ds:  # the source's own sources: not this image's
        del ds.SourceImageSequence
    ds.SoftwareVersions = _software_versions(ds.get("SoftwareVersions"))
    equipment = list(ds.get("ContributingEquipmentSequence", []))
    ds.ContributingEquipmentSequence = Sequence(equipment + [_equipment(description, now)])
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")


def _in_dataset_zone(ds, now):
    """``now`` in the zone of the dataset's Timezone Offset From UTC ("+HHMM"), which the dates
    and times of an instance that has it are in; the local zone's otherwise."""
    offset = str(ds.get("TimezoneOffsetFromUTC", "") or "").strip()
    if len(offset) != 5 or offset[0] not in "+-" or not offset[1:].isdigit():
        return now
    minutes = int(offset[1:3]) * 60 + int(offset[3:])
    return now.astimezone(timezone(timedelta(minutes=minutes if offset[0] == "+" else -minutes)))


def _values(value):
    """A multi-valued attribute's values as a list of strings ([] when absent)."""
    if value is None or value == "":
        return []
    return [str(v) for v in value] if not isinstance(value, (str, bytes)) else [str(value)]


def _derived_type(value):
    """DERIVED\\SECONDARY, then the source's value 3 and later (what kind of image it is)."""
    return ["DERIVED", "SECONDARY"] + _values(value)[2:]


def _derived_frame_type(_, elem):
    """An enhanced multi-frame file's FrameType (in its functional groups) likewise."""
    if elem.keyword == "FrameType" and elem.value:
        elem.value = _derived_type(elem.value)


def _described(old, suffix):
    """``old`` with `` suffix`` after it, cut so that the suffix fits a LO value."""
    old = str(old or "").strip()
    if not old:
        return suffix
    return f"{old[:LO_MAX - len(suffix) - 1].rstrip()} {suffix}"


def _code(value, scheme, meaning):
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _reference(source):
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    item.PurposeOfReferenceCodeSequence = Sequence([_code(*SOURCE_PURPOSE)])
    return item


def _software_versions(value):
    """The source's SoftwareVersions (the scanner's), then this project's, once."""
    ours = software_version()
    return [v for v in _values(value) if v != ours] + [ours]


def _equipment(description, now):
    """This project as the processing equipment (SOP Common Module's Contributing Equipment)."""
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = Sequence([_code(*PROCESSING_EQUIPMENT)])
    item.Manufacturer = PRODUCER
    item.SoftwareVersions = software_version()
    item.ContributionDateTime = now.strftime("%Y%m%d%H%M%S%z")
    item.ContributionDescription = description[:ST_MAX]
    return item
