"""`python -m tools.readme_figure`: the README's picture, bicubic | ours | original x3 on the middle
prostate test slice, with a magnified detail, from the committed reference weights
(models/reference/prostate/): a fresh clone makes it with no data set built and no training.

The slice ships with the code (data_prep/sources/prostate_mr/) and is degraded and scored as the
evaluation does (eval.figures' panels: MATLAB bicubic down and up, PSNR with the border shaved).
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

from core.args import command_line  # noqa: E402
from core.cli import check_writable, guarded  # noqa: E402
from core.config import DEFAULT, ROOT  # noqa: E402
from core.errors import DataError  # noqa: E402
from core.run_files import reference_dir  # noqa: E402

OUT = ROOT / "docs" / "readme_figure.png"
DATASET = "prostate"  # the one data set whose test slices ship with the code


def run(out):
    from data_prep.sources import prostate
    from eval.figures import draw, panels
    from inference.net import SRNet
    from eval.results import run_info

    check_writable(out)  # before the net runs
    reference = reference_dir(DATASET)
    if reference is None:
        raise DataError(f"no reference weights in models/reference/{DATASET}/ "
                        f"(make reference DATASET={DATASET})")
    info = run_info(reference)
    test = prostate(DEFAULT)[1]
    middle = test[len(test) // 2]
    net = SRNet(info["deploy"], info["caffemodel"])
    _, bicubic, ours, original = panels(middle.image, net, info["scale"])
    ours = (ours[0].replace("network", "ours"), ours[1])
    draw(f"ProstateX-0000 T2, test slice {middle.name}, x{info['scale']}",
         f"the reference weights: RReLU + NAG, {info['iterations']} iterations",
         [bicubic, ours, original], out)
    print(f"readme_figure: wrote {out}")
    return 0


def main(argv=None):
    p = command_line("tools.readme_figure", __doc__.splitlines()[0], short="readme_figure")
    p.add_argument("--out", type=Path, default=OUT, help=f"the PNG (default {OUT.relative_to(ROOT)})")
    args = p.parse_args(argv)
    return guarded("readme_figure", lambda: run(args.out))


if __name__ == "__main__":
    sys.exit(main())
