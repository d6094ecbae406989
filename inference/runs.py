"""Which trained net a command runs, named as a user names it: a run folder (given relative to
where make was called, or to the checkout), a committed reference, the factor a run was trained
for, and a path as a manifest shows it. Here, below ``eval``, because inference (upscale, export)
and evaluation (scores, tables) both need them."""
from pathlib import Path

from core.config import DATASETS, DEFAULT, ROOT
from core.errors import DataError
from core.run_files import reference_dir, references


def display_path(path, root=ROOT):
    """``path`` relative to the repository root when inside it, else as given."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def run_scale(run_dir, manifest):
    """The factor a run was trained for: its ``config.scale`` (the default without a config)."""
    config = manifest.get("config")
    scale = config.get("scale", DEFAULT.scale) if isinstance(config, dict) else DEFAULT.scale
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise DataError(f"{run_dir}: manifest.json config scale {scale!r} is not a positive "
                        "integer")
    return scale


def run_folder(run):
    """A --run as given, or, when it is relative and not found here, under the repository root
    (make upscale runs from the directory make was called from; runs/ lives in the checkout)."""
    if run.is_absolute() or run.exists() or not (ROOT / run).exists():
        return run
    return ROOT / run


def reference_run(name, parser):
    """models/reference/<name>, or a usage error listing the references there are."""
    there = references()
    if name not in there:
        how = (f"make reference DATASET={name} trains it" if name in DATASETS else
               f"the data sets are {', '.join(DATASETS)}")
        parser.error(f"--reference {name}: no models/reference/{name}/ (there are: "
                     f"{', '.join(there) or 'none'}; {how})")
    return reference_dir(name)
