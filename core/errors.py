"""User-facing errors and warnings for data preparation.

``DataError`` means "the input data is wrong", not "the code is wrong": command
line tools catch it and print its message (one line, naming the offending file
or folder) instead of a traceback.
"""
import sys

__all__ = ["DataError", "warn"]


def _one_line(message) -> str:
    """Collapse a message onto one line (library errors often span several)."""
    return " ".join(str(message).split("\n")).replace("\r", " ").strip()


class DataError(Exception):
    """A problem with the user's input data.

    The message is a single line that names the offending file, e.g.
    ``"scans/x.dcm: not a DICOM image (no pixel data)"``.  Newlines in the
    message are replaced by spaces so that it always prints as one line.
    """

    def __init__(self, message):
        super().__init__(_one_line(message))


def warn(message) -> None:
    """Print ``warning: <message>`` (one line) to stderr.

    Used when a bad file inside a folder is skipped and reading goes on.
    """
    print(f"warning: {_one_line(message)}", file=sys.stderr)
