"""What a command may replace: only an output this project wrote and recognises as its own.

Every output carries a mark that says so, a text starting with :data:`PRODUCER` in a field of its
format (docs/reliability.md, "Replacing outputs (FORCE)"): ``data_prep.io.marks`` for images,
volumes and DICOM (a series folder is one when every file in it is a marked DICOM file of one
series), the ONNX producer name (``medsr-caffe eval.export``, written by ``inference.export``), a field of eval's tables (``eval.results``).
:func:`check_replace` is the one guard: an existing output is replaced (with ``--force``, where a
command asks for it) only when it carries its mark, is not an input and holds none, and is not a
run or data set folder; otherwise it is refused with one line that says why.
"""
from pathlib import Path

from core.errors import DataError

PRODUCER = "medsr-caffe"  # what every mark starts with
MANIFEST = "manifest.json"  # a run's, or a data set's: such a folder is never replaced
HOW = "move or remove it by hand if it may go"


def check_replace(dst, own, force=True, inputs=()):
    """DataError unless ``dst`` may be written: it does not exist, or it may be replaced and
    ``force`` is given. ``own(dst)``: None when ``dst`` carries this project's mark of its kind,
    else why not, a clause ("it carries no mark ...": ``data_prep.io.marks``); ``inputs``:
    the paths the command reads, never replaced, nor a folder that holds one. A command that
    replaces its outputs without a flag (eval's tables) passes ``force=True``."""
    dst = Path(dst)
    if not (dst.exists() or dst.is_symlink()):
        return
    why = refusal(dst, own, inputs)
    if why:
        raise DataError(f"{dst}: not replaced: {why} (only an output this project wrote is "
                        f"replaced; {HOW})")
    if not force:
        raise DataError(f"{dst}: already exists (add --force, or FORCE=1 with make, to replace it)")


def refusal(dst, own, inputs=()):
    """Why the existing ``dst`` may not be replaced (:func:`check_replace`), or None."""
    dst = Path(dst)
    if dst.is_symlink():
        return "it is a symbolic link, which this project never writes"
    real = dst.resolve()
    for src in inputs:
        src_real = Path(src).resolve()
        if src_real == real:
            return f"it is the input {src}"
        if real in src_real.parents:
            return f"it holds the input {src}"
    if (dst / MANIFEST).is_file():
        return f"it is a run or data set folder (it holds {MANIFEST})"
    why = own(dst)
    if why is None:
        return None
    run = enclosing_run(real.parent)
    if run is not None:
        return f"it lies in the run or data set folder {run}, whose files are never replaced"
    return why


def enclosing_run(path):
    """The nearest of ``path`` and the folders above it that holds a manifest.json (a run or a
    data set folder), or None."""
    for folder in [Path(path), *Path(path).parents]:
        if (folder / MANIFEST).is_file():
            return folder
    return None
