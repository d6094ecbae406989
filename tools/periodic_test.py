"""The trainer's periodic test: the current weights on the data set's test images, at full size,
through the deploy net, with the evaluator's metrics (the paper's curves are test-image PSNR, not
patch loss). The task is the data set's: the in-plane x``scale`` degradation of ``eval.score``
for the paper's data sets; for a thick-slice scan's (``data_prep.thick_data``: its manifest's
``test_task``) the held-out in-plane slices degraded along one axis with the scan's factor and
slice profile, beside the cubic along that axis (``eval.thickslice.score_one_axis``)."""
import json
from functools import partial

from core.data_files import manifest_path, test_images
from inference.net import SRNet
from eval.score import load_hr_folder, score_method
from eval.thickslice import score_one_axis


def task_of(data_dir, cfg):
    """(a scorer ``f(images, method)``, a line that says what it scores, the name of its
    baseline) for ``data_dir``."""
    try:
        task = json.loads(manifest_path(data_dir).read_text()).get("test_task")
    except (OSError, ValueError):
        task = None
    if task and task.get("kind") == "one_axis":
        return (partial(score_one_axis, factor=task["factor"], profile=task["profile"],
                        width=task["width_px"]),
                task_line(task["factor"], task["profile"]), "cubic along one axis")
    return partial(score_method, scale=cfg.scale), f"in-plane x{cfg.scale}, beside bicubic", "bicubic"


def task_line(factor, profile):
    """What a thick-slice run's test scores, in words."""
    return (f"held-out in-plane slices thickened x{factor} along one axis ({profile} profile), "
            f"beside the cubic along that axis")


class ImageScorer:
    """Scores nets on one data set's ``test_images``; the baseline (the interpolation the net
    starts from) is computed once. ``task`` says what is scored and ``baseline`` names that
    interpolation."""

    def __init__(self, data_dir, deploy_prototxt, cfg):
        self.images = load_hr_folder(test_images(data_dir))
        self.deploy = str(deploy_prototxt)
        self.scorer, self.task, self.baseline = task_of(data_dir, cfg)
        self.bicubic = self.summary(self.scorer(self.images, lambda up: up))

    @staticmethod
    def summary(result):
        return {**result["mean"], "images": result["images"]}

    def score(self, train_net):
        """Mean PSNR/SSIM (and per image) of ``train_net``'s current weights."""
        params = {name: [b.data for b in blobs] for name, blobs in train_net.params.items()}
        net = SRNet(self.deploy, params=params)
        return self.summary(self.scorer(self.images, net))
