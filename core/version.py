"""The project's version: the one home of the number that its outputs name (a DICOM file's
SoftwareVersions, ``data_prep.io.dicom_derived``). Raise it when what the project writes changes."""
from core.outputs import PRODUCER

VERSION = "0.11.0"


def software_version():
    """The project's name and version, as an output names the software that wrote it."""
    return f"{PRODUCER} {VERSION}"
