"""`make figures` / `python -m eval.figures`: the paper's Fig. 6 per data set:
LR (nearest-neighbour enlarged) | bicubic | network | original, each with a magnified detail.
The network: the long-schedule reference weights (models/reference/<dataset>/) when present, else
RReLU + Nesterov of seed 0, else another seed of it, else the first run; at the run's scale.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from data_prep.degrade import degrade, low_resolution  # noqa: E402
from core.args import command_line  # noqa: E402
from core.cli import guarded  # noqa: E402
from core.data_files import data_dir, test_images  # noqa: E402
from core.names import PAPER_NET  # noqa: E402
from core.errors import DataError  # noqa: E402
from eval.results import dataset_runs, run_info  # noqa: E402
from inference.net import SRNet  # noqa: E402
from eval.metrics import psnr, to_uint8  # noqa: E402
from eval.score import load_hr_folder  # noqa: E402
from core.atomic import atomic_path  # noqa: E402
from core.config import ROOT  # noqa: E402
from core.run_files import REFERENCE_ROOT, read_manifest, reference_dir  # noqa: E402


def detail_box(hr, size):
    """The ``size`` square with the most detail (largest gradient energy) of the HR image."""
    gy, gx = np.gradient(hr.astype(np.float64))
    energy = gx ** 2 + gy ** 2
    best, box = -1.0, (0, 0)
    step = max(8, size // 4)
    for r in range(0, hr.shape[0] - size + 1, step):
        for c in range(0, hr.shape[1] - size + 1, step):
            e = energy[r:r + size, c:c + size].sum()
            if e > best:
                best, box = e, (r, c)
    return box


def panels(hr_uint8, net, scale):
    """(title, uint8 image) for LR, bicubic, network and original, all at the HR size."""
    hr, up = degrade(hr_uint8, scale)
    lr = np.kron(to_uint8(low_resolution(hr_uint8, scale)), np.ones((scale, scale), np.uint8))
    original, bicubic, ours = to_uint8(hr), to_uint8(up), to_uint8(net(up))
    return [("LR (nearest)", lr), (f"bicubic {psnr(original, bicubic, scale):.2f} dB", bicubic),
            (f"network {psnr(original, ours, scale):.2f} dB", ours), ("original", original)]


def draw(name, label, images, path, detail=None):
    """A 2-row grid: full images with the detail box, then the magnified details."""
    size = detail or max(32, min(images[0][1].shape) // 4)
    r, c = detail_box(images[-1][1], size)
    fig, axes = plt.subplots(2, len(images), figsize=(3.2 * len(images), 6.6))
    for col, (title, img) in enumerate(images):
        axes[0, col].imshow(img, cmap="gray", vmin=0, vmax=255)
        axes[0, col].add_patch(Rectangle((c, r), size, size, fill=False, edgecolor="red", lw=1))
        axes[0, col].set_title(title, fontsize=9)
        axes[1, col].imshow(img[r:r + size, c:c + size], cmap="gray", vmin=0, vmax=255,
                            interpolation="nearest")
        for ax in axes[:, col]:
            ax.axis("off")
    fig.suptitle(f"{name} ({label})", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def figure_for(dataset, run_dir, out_dir, scale=None, hr_dir=None, label=None):
    """Fig. 6 of one data set from its first test image and one run, at the run's scale (a
    ``scale`` given must agree); returns the PNG path."""
    info = run_info(run_dir)
    if scale is not None and scale != info["scale"]:
        raise DataError(f"scale {scale} contradicts {run_dir}, trained for x{info['scale']}")
    name, image = load_hr_folder(hr_dir or test_images(data_dir(dataset)))[0]
    path = Path(out_dir) / f"{dataset}_fig6.png"
    net = SRNet(info["deploy"], info["caffemodel"])
    draw(f"{dataset} {name}", f"{label or info['label']}, {info['iterations']} iterations",
         panels(image, net, info["scale"]), path)
    return path


def preferred_run(runs, reference=None):
    """(run directory, label) of Fig. 6: the long-schedule reference weights when present, else
    the paper's method (RReLU + Nesterov) of seed 0, else any of its seeds, else the first run."""
    if reference is not None:
        return reference, "long schedule"
    manifests = [(read_manifest(r) or {}, r) for r in runs]

    def pick(test):
        return next((r for m, r in manifests if test(m)), None)

    paper_net = pick(lambda m: (m.get("act"), m.get("solver"), m.get("seed", 0)) == (*PAPER_NET, 0))
    paper_net = paper_net or pick(lambda m: (m.get("act"), m.get("solver")) == PAPER_NET)
    return paper_net or runs[0], None


def main(argv=None):
    p = command_line("eval.figures", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", action="append", help="default: every data set with runs")
    p.add_argument("--out", type=Path, default=ROOT / "figures")
    args = p.parse_args(argv)
    return guarded("figures", lambda: run(args))


def run(args):
    datasets = args.dataset or sorted({d.name for base in (ROOT / "runs", REFERENCE_ROOT)
                                       for d in base.glob("*") if d.is_dir()})
    written = 0
    for dataset in datasets:
        runs, reference = dataset_runs(dataset), reference_dir(dataset)
        if not args.dataset and not test_images(data_dir(dataset)).is_dir():
            # e.g. the committed reference weights of a data set this checkout has not built
            print(f"figures: {dataset}: skipped (no data/{dataset}: make data DATASET={dataset})",
                  file=sys.stderr)
            continue
        if runs or reference:
            run_dir, label = preferred_run(runs, reference)
            print(f"figures: wrote {figure_for(dataset, run_dir, args.out, label=label)}")
            written += 1
    if not written:
        print("figures: no trained run found under runs/ (make grid first)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
