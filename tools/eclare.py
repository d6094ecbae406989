"""ECLARE (Remedios et al., "Efficient cross-planar learning for anisotropic resolution
enhancement"; PyPI ``eclare``, CLI ``run-eclare``, PyTorch), the field's public self-supervised
method, run as a baseline beside `make thickslice` by ``tools.thickslice_validate``.

It lives in its own environment (``.venv-eclare``, made by :func:`install` from
tools/setup/requirements-eclare.txt when `make thickslice-validate` asks): the harness never
imports it, it only runs its command on
the same thick NIfTI that `tools.thickslice` is given, with the slice profile and its width
(``--relative-slice-thickness``, in in-plane voxels) given rather than estimated (ESPRESO), and
reads back its output. ECLARE writes its output on its own grid (``radifox``'s
``update_affine``); :func:`on_grid` reads it at the truth's voxels by world position, so a grid
convention that differs from ours cannot pass for a loss of quality.
"""
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from core.atomic import atomic_dir, write_json_atomic, write_text_atomic
from core.config import ROOT
from core.errors import DataError

VENV = ROOT / ".venv-eclare"
REQUIREMENTS = ROOT / "tools" / "setup" / "requirements-eclare.txt"
INSTALLED = "medsr-requirements.txt"  # in VENV once pip has installed every pin: the pins it holds
VERSION = "1.0.1"  # tools/setup/requirements-eclare.txt pins it
# ECLARE's own default number of training patches (--n-patches) and the reduced schedule that a
# 2-core CPU affords per volume (2.56 % of it; the default takes hours per volume there)
DEFAULT_PATCHES = 1_000_000
REDUCED_PATCHES = 25_600
GRID_TOLERANCE_MM = 1e-4  # affines closer than this are the same grid
LOG = "eclare.log"
RECORD = "record.json"


class EclareError(Exception):
    """ECLARE is missing or its run failed: one line naming what to do or its log."""


def executable(venv=None):
    """The ``run-eclare`` command of ``venv`` (default ``.venv-eclare``) when :func:`install`
    finished there, or a one-line error."""
    venv = Path(venv or VENV)
    path = venv / "bin" / "run-eclare"
    if not path.is_file() or not (venv / INSTALLED).is_file():
        raise EclareError(f"ECLARE is not installed in {venv}: `make thickslice-validate` installs it "
                          f"(python -m tools.thickslice_validate --install-eclare), or leave it out "
                          f"with ECLARE_PATCHES=0 (--eclare-patches 0)")
    return path


def install(venv=None, requirements=REQUIREMENTS):
    """Make ``venv`` (a virtual environment of this Python's base interpreter) hold the pins of
    ``requirements``, once: a rerun with the same pins does nothing. Returns whether it installed.
    The pins are recorded last, so an install that stopped midway is done again."""
    venv = Path(venv or VENV)
    pins = Path(requirements).read_text()
    marker = venv / INSTALLED
    if marker.is_file() and marker.read_text() == pins:
        return False
    print(f"thickslice-validate: installing ECLARE into {venv} ({requirements})", flush=True)
    marker.unlink(missing_ok=True)  # other pins: not installed until they all are
    for step in ([sys.executable, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(requirements)]):
        if subprocess.run(step, env=_environment()).returncode:
            raise EclareError(f"installing ECLARE failed at: {' '.join(step)}")
    write_text_atomic(marker, pins)
    return True


def scan_digest(path):
    """sha256 of a NIfTI's voxels, their type and its affine: the identity of the scan ECLARE
    ran on (not the file's bytes: gzip stamps the time it was written)."""
    image = nib.load(str(path))
    values = np.asarray(image.dataobj)
    digest = hashlib.sha256(json.dumps({"shape": values.shape, "dtype": str(values.dtype),
                                        "affine": image.affine.tolist()}).encode())
    digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def command(exe, scan, out_dir, n_patches, profile, width):
    """ECLARE's command line for ``scan`` with the slice ``profile`` of FWHM (Gaussian) or full
    width (boxcar) ``width`` in in-plane voxels."""
    return [str(exe), "--in-fpath", str(scan), "--out-dir", str(out_dir),
            "--n-patches", str(n_patches), "--relative-slice-thickness", f"{width:g}",
            "--relative-slice-profile-type", profile, "--suffix", "_eclare"]


def output_name(scan):
    """The file ECLARE writes for ``scan`` (its ``--suffix`` before ``.nii``)."""
    return Path(scan).name.replace(".nii", "_eclare.nii")


def run(scan, out_dir, n_patches, profile, width, venv=None):
    """ECLARE on ``scan`` into ``out_dir``: (its output as a nibabel image, its wall time in s,
    whether that run was reused). ``out_dir`` holds the output, ECLARE's log and a record of
    what it ran on; a rerun on the same scan bytes with the same settings reuses it. The folder
    appears whole or not at all (an interrupt or a failed run leaves the previous one)."""
    out_dir = Path(out_dir)
    want = {"eclare": VERSION, "scan_sha256": scan_digest(scan), "n_patches": int(n_patches),
            "profile": profile, "width_px": float(width)}
    old = _record(out_dir)
    if old is not None and {k: old.get(k) for k in want} == want:
        return nib.load(str(out_dir / old["output"])), old["wall_s"], True
    exe = executable(venv)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir) as tmp:
        start = time.monotonic()
        with open(tmp / LOG, "w") as log:
            status = subprocess.run(command(exe, scan, tmp, n_patches, profile, width), stdout=log,
                                    stderr=subprocess.STDOUT, env=_environment()).returncode
        wall = time.monotonic() - start
        produced = tmp / output_name(scan)
        if status or not produced.is_file():
            kept = out_dir.with_name(out_dir.name + ".failed.log")
            os.replace(tmp / LOG, kept)
            raise EclareError(f"ECLARE failed on {scan} (exit {status}): its log is {kept}")
        write_json_atomic(tmp / RECORD, {**want, "output": produced.name, "wall_s": round(wall, 1),
                                         "command": command("run-eclare", scan, out_dir, n_patches,
                                                            profile, width)[1:]})
    return nib.load(str(out_dir / produced.name)), wall, False


def _record(out_dir):
    try:
        record = json.loads((out_dir / RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not (out_dir / str(record.get("output"))).is_file():
        return None
    return record


def _environment():
    """The caller's environment without the harness' venv on PATH: ECLARE runs on its own."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return env


def on_grid(image, affine, shape):
    """``image``'s values at the voxels of the grid (``affine``, ``shape``): its own values when
    the grids are the same, else a cubic spline read at each voxel's world position (its
    voxels may be shifted, flipped or permuted relative to ours). Returns (values as float64,
    the largest distance in mm between the two grids' voxel centres before resampling: 0 when
    they agree). A grid that does not cover ``shape`` is refused: it would be scored on
    made-up voxels."""
    values = np.asarray(image.dataobj, dtype=np.float64)
    if values.ndim != 3:
        raise DataError(f"ECLARE's output has shape {values.shape}, not a volume")
    offset = _offset_mm(image, affine, shape)
    if values.shape == tuple(shape) and offset <= GRID_TOLERANCE_MM:
        return values, 0.0
    to_theirs = np.linalg.inv(image.affine) @ affine  # our voxel -> their voxel
    grid = np.indices(shape, dtype=np.float64).reshape(3, -1)
    where = to_theirs[:3, :3] @ grid + to_theirs[:3, 3:]
    reach = np.array(values.shape)[:, None] - 1
    if (where < -0.5).any() or (where > reach + 0.5).any():
        raise DataError(f"ECLARE's output grid (shape {values.shape}, affine {image.affine.tolist()}) "
                        f"does not cover the truth's (shape {tuple(shape)})")
    out = ndimage.map_coordinates(values, where, order=3, mode="nearest")
    return out.reshape(shape), offset


def _offset_mm(image, affine, shape):
    """The largest distance (mm) between voxel (i, j, k) of ``image`` and of the grid ``affine``
    over the corners of ``shape``: how far apart the two grids place the same indices."""
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)]).T
    return float(np.abs(image.affine @ corners - affine @ corners).max())
