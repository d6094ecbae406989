"""`python -m eval.regions`: where a net gains or loses against bicubic, dark region against the rest.

    python -m eval.regions --dataset brain --run runs/brain/long_schedule [--iters 6000 40000]
        [--dark 20] [--engine caffe|opencv]

Scores the test images as `python -m eval` does (degradation, ``uint8(x * 255)``, ``scale`` px
shaved), then splits every image by its HR pixels: *dark* (below ``--dark`` grey levels: the
black background and the edge of what it surrounds, where bicubic rings and is clipped at 0) and
*bright* (the rest: tissue). Per region: the share of pixels, PSNR from that region's mean
squared error, and the mean of the SSIM map over it (the map of :func:`eval.metrics.ssim_map`,
each value placed by its window's centre pixel); means over images, as the paper's tables.

Why: a whole-image mean can hide where a gain comes from. On brain, the short schedule's gain is
all in the dark region; the net beats bicubic in the tissue only far later (docs/training.md,
"Reference weights"; the numbers are in docs/notebook/).
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")  # before Caffe loads: keep errors to one line

import numpy as np  # noqa: E402

from core.args import command_line  # noqa: E402
from core.cli import guarded  # noqa: E402
from core.data_files import data_dir, test_images  # noqa: E402
from core.errors import DataError  # noqa: E402
from core.run_files import final_snapshot  # noqa: E402
from data_prep.degrade import degrade  # noqa: E402
from eval.metrics import SSIM_WINDOW, psnr_of, shave, ssim_map, to_uint8  # noqa: E402
from eval.results import run_scale  # noqa: E402
from eval.score import load_hr_folder  # noqa: E402
from inference.tiles import ENGINES  # noqa: E402

REGIONS = ("dark", "bright")


def region_scores(hr_uint8, estimate_uint8, border, dark):
    """{region: (share of pixels, PSNR in dB, mean SSIM)} of one image pair; a region with no
    pixel gets NaN scores."""
    ref, est = (shave(x, border).astype(np.float64) for x in (hr_uint8, estimate_uint8))
    pad = (SSIM_WINDOW - 1) // 2
    smap, centre = ssim_map(hr_uint8, estimate_uint8, border), ref[pad:-pad, pad:-pad]
    masks = {"dark": (ref < dark, centre < dark), "bright": (ref >= dark, centre >= dark)}
    return {name: (float(mask.mean()), psnr_of(ref[mask] - est[mask]),
                   float(smap[smask].mean()) if smask.any() else float("nan"))
            for name, (mask, smask) in masks.items()}


def method_regions(hr_images, method, scale, dark):
    """{region: (share, PSNR, SSIM)} averaged over images; ``method`` maps the bicubic image to
    its estimate (``lambda x: x`` is bicubic)."""
    rows = []
    for _, image in hr_images:
        hr, upscaled = degrade(image, scale)
        rows.append(region_scores(to_uint8(hr), to_uint8(method(upscaled)), scale, dark))
    return {r: tuple(float(np.nanmean([row[r][k] for row in rows])) for k in range(3)) for r in REGIONS}


def snapshot_models(run, iters):
    """[(label, deploy, caffemodel)]: the run's final snapshot, or those of the given iterations
    (``<run>/snapshots/srcnn_iter_<i>.caffemodel``, as the trainer names them)."""
    manifest, deploy, final = final_snapshot(run)
    if not iters:
        return [(f"iteration {manifest['snapshots'][-1]['iter']}", deploy, final)]
    models = [(i, Path(run) / "snapshots" / f"srcnn_iter_{i}.caffemodel") for i in iters]
    missing = [str(i) for i, path in models if not path.is_file()]
    if missing:
        raise DataError(f"{run}: no snapshot of iteration {', '.join(missing)} in its snapshots/")
    return [(f"iteration {i}", deploy, path) for i, path in models]


def table(rows):
    """Markdown: one row per method, share / PSNR / SSIM per region."""
    head = "| method | " + " | ".join(f"{r} share | {r} PSNR | {r} SSIM" for r in REGIONS) + " |"
    lines = [head, "|---" * (1 + 3 * len(REGIONS)) + "|"]
    for label, scores in rows:
        cells = [f"{scores[r][0]:.2f} | {scores[r][1]:.2f} | {scores[r][2]:.4f}" for r in REGIONS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = command_line("eval.regions", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="score data/<dataset>/test_images")
    src.add_argument("--hr", type=Path, help="a folder of 8-bit HR images")
    p.add_argument("--run", type=Path, required=True, help="a run directory (or models/reference/<d>)")
    p.add_argument("--iters", type=int, nargs="*", help="snapshot iterations (default: the final one)")
    p.add_argument("--dark", type=float, default=20, help="HR grey level below which a pixel is dark")
    p.add_argument("--engine", choices=ENGINES, default=ENGINES[0])
    args = p.parse_args(argv)
    return guarded("regions", lambda: run(args))


def run(args):
    hr = load_hr_folder(args.hr or test_images(data_dir(args.dataset)))
    manifest, _, _ = final_snapshot(args.run)
    scale = run_scale(args.run, manifest)
    from inference.net import SRNet  # imports Caffe: only once the inputs are known good
    rows = [("bicubic", method_regions(hr, lambda x: x, scale, args.dark))]
    for label, deploy, model in snapshot_models(args.run, args.iters):
        net = SRNet(str(deploy), str(model), engine=args.engine)
        rows.append((label, method_regions(hr, net, scale, args.dark)))
    print(f"{len(hr)} images, x{scale}, dark: HR below {args.dark:g} grey levels\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
