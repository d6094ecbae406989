"""The one error of the DICOMweb client."""
from core.errors import DataError

__all__ = ["PacsError"]


class PacsError(DataError):
    """One line about the PACS: unreachable, credentials refused, not found, server error. A
    DataError: the command-line tools print it as ``<program>: error: ...`` (exit 2)."""
