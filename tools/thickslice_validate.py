"""`make thickslice-validate` / `python -m tools.thickslice_validate`: `make thickslice` scored on
a volume whose thin slices are known, tuned on nothing of it.

Colin27 (the brain data set's source, ``data_prep.sources.fetch_brain``: 0.5 mm voxels resampled
from a 1 mm acquisition) is averaged over 2x2x2 blocks into the 1 mm isotropic truth, thickened
along z with the Gaussian profile (``data_prep.one_axis.thicken``: FWHM = the spacing) at each
factor, written as a NIfTI with its thick geometry, and given to `tools.thickslice` like any scan.
Its output is scored against the truth beside: MATLAB's cubic along z (the net's input), a
cubic spline along z (``scipy.ndimage.map_coordinates``, order 3) and the in-plane x3 reference
net (models/reference/brain) on the same reformats without self-training. Scores: PSNR in 3-D
inside the brain (Colin27's own brain mask, ch2bet), and PSNR/SSIM per through-plane slice
(sagittal and coronal, each through the brain), on 8-bit values through the truth's 0.5-99.5
percentile window (the brain data set's rule), the metric conventions of eval.metrics.

With ``--eclare-patches N`` ECLARE (``tools.eclare``, its own environment: `make eclare-setup`)
runs on the same thick NIfTI with the same profile and width, N training patches, and is scored
by the same code on the truth's grid; each self-trained method's wall time is beside its scores.
"""
if __name__ == "__main__":
    from core.cli import exit_quietly_until_main
    exit_quietly_until_main()

import argparse
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from core.args import command_line
from core.atomic import write_json_atomic, write_text_atomic
from core.cli import guarded
from core.config import ROOT, THICKSLICE_FLIP
from core.errors import DataError
from data_prep.intensity import percentile_window
from data_prep.one_axis import interpolate, thicken
from eval.metrics import psnr_of, ssim, to_uint8
from tools.eclare import DEFAULT_PATCHES, REDUCED_PATCHES

FACTORS = (3, 6)  # a 3 mm and a 6 mm acquisition of a 1 mm brain
# colin27: the validation volume (human, 1 mm), scored once the defaults were set; inia19: the
# volume the defaults were chosen on (INIA19 macaque T1 template, 0.5 mm, skull-stripped, CC-BY,
# in the same Debian package), so that Colin27's scores come from data no one tuned on.
VOLUMES = ("colin27", "inia19")
OUT = ROOT / "results" / "thickslice"
BRAIN_SLICE = 0.05  # a through-plane slice is scored when this share of its voxels is brain


def truth_volume(name="colin27"):
    """(the isotropic truth as float64, its affine, the brain mask) of volume ``name``
    (VOLUMES)."""
    from data_prep.sources import fetch_brain
    path = fetch_brain()
    if name == "inia19":
        img = nib.load(str(path.with_name("inia19-t1-brain.nii.gz")))
        values = np.asarray(img.dataobj, dtype=np.float64)
        return values, img.affine.copy(), values > 0  # skull-stripped: the brain is what is not 0
    head = nib.load(str(path))
    mask_img = nib.load(str(path.with_name("ch2bet.nii.gz")))
    values = _halved(np.asarray(head.dataobj, dtype=np.float64))
    affine = head.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ [0.5, 0.5, 0.5]  # the centre of the first 2x2x2 block
    affine[:3, :3] *= 2.0
    return values, affine, _resampled_mask(mask_img, affine, values.shape)


def _resampled_mask(mask_img, affine, shape):
    """ch2bet's brain (its own 1 mm grid) at the truth's voxels, nearest neighbour by world
    position."""
    to_mask = np.linalg.inv(mask_img.affine) @ affine
    grid = np.indices(shape).reshape(3, -1)
    idx = np.rint(to_mask[:3, :3] @ grid + to_mask[:3, 3:]).astype(np.intp)
    brain = np.asarray(mask_img.dataobj) > 0
    inside = np.all((idx >= 0) & (idx < np.array(brain.shape)[:, None]), axis=0)
    mask = np.zeros(grid.shape[1], dtype=bool)
    mask[inside] = brain[tuple(idx[:, inside])]
    return mask.reshape(shape)


def _halved(x):
    x = np.asarray(x, dtype=np.float64)
    x = x[:x.shape[0] // 2 * 2, :x.shape[1] // 2 * 2, :x.shape[2] // 2 * 2]
    return x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2, x.shape[2] // 2, 2).mean(axis=(1, 3, 5))


def thick_scan(truth, affine, factor):
    """(the truth cropped to whole blocks along z, the thick volume, the thick affine): slice k
    of the thick volume is centred on thin slice k * factor + (factor - 1) / 2."""
    keep = truth.shape[2] // factor * factor
    thin = truth[:, :, :keep]
    thick_affine = affine.copy()
    thick_affine[:3, 3] += affine[:3, 2] * (factor - 1) / 2.0
    thick_affine[:3, 2] *= factor
    return thin, thicken(thin, 2, factor), thick_affine


def spline_z(thick, factor):
    """Cubic spline along z at imresize's positions (new n at old (n + 0.5) / factor - 0.5)."""
    z = (np.arange(thick.shape[2] * factor) + 0.5) / factor - 0.5
    grid = np.meshgrid(np.arange(thick.shape[0]), np.arange(thick.shape[1]), z, indexing="ij")
    return ndimage.map_coordinates(thick, grid, order=3, mode="mirror")


def reference_net_z(thick01, factor):
    """The in-plane x3 reference net (brain) on the z-interpolated reformats, no self-training."""
    from core.run_files import reference_dir
    from inference.net import SRNet
    from inference.through_plane import super_resolve
    from inference.upscale import resolve_run
    deploy, caffemodel, _ = resolve_run(reference_dir("brain"))
    return super_resolve(SRNet(deploy, caffemodel), thick01, 2, factor, desc="reference net")


def scores(truth, estimate, mask, window):
    """PSNR in 3-D inside the brain, mean PSNR and SSIM over the sagittal and coronal slices."""
    lo, hi = window
    a, b = (to_uint8((v - lo) / (hi - lo)).astype(np.float64) for v in (truth, estimate))
    out = {"psnr_brain_3d": psnr_of((a - b)[mask])}
    slices = []
    for axis in (0, 1):
        for i in range(truth.shape[axis]):
            if np.take(mask, i, axis=axis).mean() >= BRAIN_SLICE:
                ref, est = np.take(a, i, axis=axis), np.take(b, i, axis=axis)
                slices.append((psnr_of(ref - est), ssim(ref, est, border=0)))
    out["psnr_slices"] = float(np.mean([s[0] for s in slices]))
    out["ssim_slices"] = float(np.mean([s[1] for s in slices]))
    out["slices"] = len(slices)
    return out


OURS = "ours (make thickslice)"


def run_ours(scan_path, sr_path, factor, args):
    """`tools.thickslice` on the thick scan: (its output image, its wall time in s). A finished
    run it reuses (a rerun of the validation) adds that run's training time, so that the time is
    always that of the whole command."""
    from core.run_files import read_manifest
    from tools import thickslice
    argv = ["--in", str(scan_path), "--out", str(sr_path), "--force", "--work",
            str(args.out / f"work_x{factor}"), *(["--iters", str(args.iters)] if args.iters else []),
            *(["--solver", args.solver] if args.solver else []), *(["--act", args.act] if args.act else []),
            *([] if args.flip else ["--no-flip"]), *args.overrides]
    ours_args = thickslice.parse_args(argv)
    start = time.monotonic()
    status = thickslice.run(ours_args)
    wall = time.monotonic() - start
    if status:  # the trainer was interrupted or diverged and said so
        raise SystemExit(status)
    manifest = read_manifest(ours_args.run_dir) or {}
    if manifest.get("wall_time_s", 0.0) > wall:  # trained before this command: reused
        wall += manifest["wall_time_s"]
    return nib.load(str(sr_path)), wall


def run_eclare(scan_path, factor, thin_shape, affine, args):
    """ECLARE on the same thick scan, the Gaussian of FWHM = the slice spacing given (in in-plane
    voxels: ``factor``): (its output on the truth's grid, its wall time, the grid offset in mm)."""
    from tools import eclare
    folder = args.out / f"eclare_x{factor}_n{args.eclare_patches}"
    image, wall, reused = eclare.run(scan_path, folder, args.eclare_patches, "gaussian", float(factor))
    print(f"thickslice-validate: ECLARE {eclare.VERSION}, {args.eclare_patches} patches: "
          f"{'the run in ' + str(folder) + ' reused' if reused else 'ran'} ({wall:.0f} s)")
    values, offset = eclare.on_grid(image, affine, thin_shape)
    return values, wall, offset


def eclare_label(patches):
    return f"ECLARE 1.0.1, --n-patches {patches}"


def validate(factor, truth, affine, mask, args):
    """The scores of every method at ``factor`` (with ``wall_s`` for the self-trained ones); the
    thick scan and the outputs under ``args.out``."""
    thin, thick, thick_affine = thick_scan(truth, affine, factor)
    mask = mask[:, :, :thin.shape[2]]
    scan_path, sr_path = (args.out / f"{args.volume}_x{factor}{end}.nii.gz" for end in ("", "_sr"))
    nib.save(nib.Nifti1Image(thick.astype(np.float32), thick_affine), str(scan_path))
    ours, ours_s = run_ours(scan_path, sr_path, factor, args)
    if not np.allclose(ours.affine, affine, atol=1e-4):
        raise DataError(f"{sr_path}: its affine does not overlay the truth's:\n{ours.affine}\n{affine}")
    window = percentile_window(thin)[:2]
    lo, hi = percentile_window(thick)[:2]
    methods = {"cubic (imresize along z)": interpolate(thick, 2, factor),
               "cubic spline along z": spline_z(thick, factor),
               "reference x3 net, no self-training": lo + (hi - lo) * reference_net_z((thick - lo) / (hi - lo), factor),
               OURS: np.asarray(ours.dataobj, dtype=np.float64)}
    times = {OURS: ours_s}
    if args.eclare_patches:
        label = eclare_label(args.eclare_patches)
        methods[label], times[label], offset = run_eclare(scan_path, factor, thin.shape, affine, args)
    rows = {name: scores(thin, est, mask, window) for name, est in methods.items()}
    for name, wall in times.items():
        rows[name]["wall_s"] = round(wall, 1)
    if args.eclare_patches:
        rows[label]["grid_offset_mm"] = offset  # 0: ECLARE's output grid was the truth's
    return rows


def table(results):
    """Markdown: one row per factor and method, the gain over the cubic spline."""
    lines = ["| factor | method | PSNR brain 3-D | gain vs spline | PSNR slices | SSIM slices | wall time |",
             "|---|---|---|---|---|---|---|"]
    for factor, rows in results.items():
        spline = rows["cubic spline along z"]["psnr_brain_3d"]
        for name, s in rows.items():
            wall = f"{s['wall_s']:.0f} s" if "wall_s" in s else "-"
            lines.append(f"| x{factor} | {name} | {s['psnr_brain_3d']:.2f} | {s['psnr_brain_3d'] - spline:+.2f} "
                         f"| {s['psnr_slices']:.2f} | {s['ssim_slices']:.4f} | {wall} |")
    return "\n".join(lines) + "\n"


def run(args):
    if args.eclare_patches:
        from tools.eclare import executable, install
        if args.install_eclare:
            install()
        executable()  # missing: refused before any training
    args.out.mkdir(parents=True, exist_ok=True)
    truth, affine, mask = truth_volume(args.volume)
    results = {}
    for factor in args.factors:
        results[factor] = validate(factor, truth, affine, mask, args)
        write_json_atomic(args.out / "scores.json", {str(k): v for k, v in results.items()})
    text = table(results)
    write_text_atomic(args.out / "scores.md", text)
    print(text, end="")
    return 0


def main(argv=None):
    p = command_line("tools.thickslice_validate", short="thickslice-validate", description=__doc__.splitlines()[0])
    p.add_argument("--factors", type=int, nargs="+", default=list(FACTORS))
    p.add_argument("--volume", choices=VOLUMES, default=VOLUMES[0],
                   help="colin27 (validation, the default) or inia19 (the tuning volume)")
    p.add_argument("--iters", type=int, help="training iterations (default: tools.thickslice's)")
    p.add_argument("--act", help="the activation (default: tools.thickslice's)")
    p.add_argument("--solver", help="the solver type (default: tools.thickslice's)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=THICKSLICE_FLIP,
                   help="ours' pass also on each reformat mirrored along the slice axis (default: on)")
    p.add_argument("--eclare-patches", type=int, metavar="N", default=REDUCED_PATCHES,
                   help=f"ECLARE beside ours with N training patches (default {REDUCED_PATCHES}, the "
                        f"schedule a 2-core CPU affords; ECLARE's own default is {DEFAULT_PATCHES}); "
                        "0 leaves ECLARE out")
    p.add_argument("--install-eclare", action="store_true",
                   help="install ECLARE into .venv-eclare first when it is not there (make does)")
    p.add_argument("--out", type=Path, help=f"scans, outputs, runs and scores (default {OUT}/<volume>)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training config overrides")
    args = p.parse_intermixed_args(argv)  # KEY=VALUE before or after the options
    args.out = args.out or OUT / args.volume
    if args.eclare_patches < 0:
        p.error(f"--eclare-patches must be 0 (no ECLARE) or more, got {args.eclare_patches}")
    from core.config import ConfigError
    from tools.train_run_dir import TrainError
    from tools.eclare import EclareError
    return guarded("thickslice-validate", lambda: run(args), (DataError, ConfigError, TrainError, EclareError))


if __name__ == "__main__":
    sys.exit(main())
