"""`python -m tools.thickslice_figure`: a thick-slice scan and `make thickslice`'s output side by side in
the planes across the slices: a sagittal and a coronal reformat (rows) through the middle of the
volume, as nearest neighbour (the slices as acquired), MATLAB's cubic along the slice axis, and
the output (columns); one 8-bit PNG through the input's 0.5-99.5 percentile window. It checks
first that the output overlays the input (its affine is the input's refined along the slice
axis, ``data_prep.thick_scan.refined_affine``).

    python -m tools.thickslice_figure --in scan/ --sr scan_sr/ --png docs/thickslice_prostate.png
"""
if __name__ == "__main__":
    from core.cli import exit_quietly_until_main
    exit_quietly_until_main()

import sys
from pathlib import Path

import cv2
import numpy as np

from core.args import command_line
from core.atomic import atomic_path
from core.cli import check_writable, guarded
from core.errors import DataError
from data_prep.intensity import percentile_window
from data_prep.one_axis import interpolate
from data_prep.thick_scan import read_scan, refined_affine

CROP = 224  # the central in-plane pixels shown: the anatomy, not the air around it
LABEL_ROWS = 18  # a strip above each panel for its name
OVERLAY_MM = 1e-3  # DICOM's 16-character decimal strings hold positions to about 1e-6 mm


PLANE_NAMES = ("sagittal", "coronal", "axial")  # the plane whose normal is RAS+ axis 0, 1, 2


def plane_names(affine, axis):
    """The anatomical name of the two reformats :func:`planes` gives: each is named by the world
    axis closest to the voxel axis it leaves out."""
    return [PLANE_NAMES[int(np.argmax(np.abs(affine[:3, other])))] for other in range(3) if other != axis]


def planes(volume, axis):
    """The two reformats through the middle of ``volume`` that contain ``axis`` (one per other
    axis, in order), each with the slice axis vertical (the first slice at the bottom) and the
    central CROP pixels across."""
    out = []
    for other in [a for a in range(3) if a != axis]:
        rest = [a for a in range(3) if a not in (other, axis)][0]
        plane = np.take(volume, volume.shape[other] // 2, axis=other)  # axes: axis and rest, in order
        plane = (plane.T if axis > rest else plane)[::-1]  # slices as rows, the last on top
        start = max(0, (plane.shape[1] - CROP) // 2)
        out.append(plane[:, start:start + CROP])
    return out


def panel(image, window, label):
    lo, hi = window
    pixels = np.clip(np.rint((image - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)
    strip = np.zeros((LABEL_ROWS, pixels.shape[1]), np.uint8)
    cv2.putText(strip, label, (4, LABEL_ROWS - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 255, 1, cv2.LINE_AA)
    return np.vstack([strip, pixels])


def figure(scan, sr):
    """The grid: rows the two reformats (sagittal and coronal for an axial scan), columns
    nearest | cubic | ours."""
    factor = sr.values.shape[scan.axis] // scan.values.shape[scan.axis]
    if sr.values.shape[scan.axis] != factor * scan.values.shape[scan.axis] or factor < 2:
        raise DataError(f"the output has {sr.values.shape[scan.axis]} slices, not a multiple of the "
                        f"input's {scan.values.shape[scan.axis]}")
    misplaced = np.abs(sr.affine - refined_affine(scan.affine, scan.axis, factor)).max()
    if misplaced > OVERLAY_MM:
        raise DataError(f"the output's geometry is off the input's refined by {misplaced:.3g} mm: it "
                        "does not overlay the input")
    window = percentile_window(scan.values)[:2]
    methods = {"nearest": np.repeat(scan.values, factor, axis=scan.axis),
               "cubic": interpolate(scan.values, scan.axis, factor), "ours": sr.values}
    shown = {name: planes(v, scan.axis) for name, v in methods.items()}
    rows = [np.hstack([panel(shown[name][r], window, f"{name} ({which})") for name in methods])
            for r, which in enumerate(plane_names(scan.affine, scan.axis))]
    return np.vstack(rows)


def run(args):
    check_writable(args.png, "--png")
    grid = figure(read_scan(args.input), read_scan(args.sr))
    ok, encoded = cv2.imencode(".png", grid)
    if not ok:
        raise DataError(f"could not encode {args.png}")
    with atomic_path(args.png) as tmp:
        tmp.write_bytes(encoded.tobytes())
    print(f"thickslice-figure: {grid.shape[1]}x{grid.shape[0]} -> {args.png}")
    return 0


def main(argv=None):
    p = command_line("tools.thickslice_figure", short="thickslice-figure", description=__doc__.splitlines()[0])
    p.add_argument("--in", dest="input", type=Path, required=True, help="the thick-slice scan")
    p.add_argument("--sr", type=Path, required=True, help="make thickslice's output for it")
    p.add_argument("--png", type=Path, required=True, help="the figure")
    args = p.parse_args(argv)
    return guarded("thickslice-figure", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
