"""The trainer's periodic test: the current weights on the data set's test images, at full size,
through the deploy net, with the evaluator's degradation and metrics (the paper's curves are
test-image PSNR, not patch loss)."""

from core.data_files import test_images
from eval.infer import SRNet
from eval.score import load_hr_folder, score_method


class ImageScorer:
    """Scores nets on one data set's ``test_images``; the bicubic baseline is computed once."""

    def __init__(self, data_dir, deploy_prototxt, cfg):
        self.images = load_hr_folder(test_images(data_dir))
        self.deploy = str(deploy_prototxt)
        self.scale = cfg.scale
        self.bicubic = self.summary(score_method(self.images, lambda up: up, scale=self.scale))

    @staticmethod
    def summary(result):
        return {**result["mean"], "images": result["images"]}

    def score(self, train_net):
        """Mean PSNR/SSIM (and per image) of ``train_net``'s current weights."""
        params = {name: [b.data for b in blobs] for name, blobs in train_net.params.items()}
        net = SRNet(self.deploy, params=params)
        return self.summary(score_method(self.images, net, scale=self.scale))
