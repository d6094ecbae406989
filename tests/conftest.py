"""Shared test set-up: quiet Caffe's glog output (glog reads this when libcaffe loads, so before any
test module imports caffe), and the fixtures more than one test module uses. Plain helpers are in
tests/helpers.py. Tests marked ``slow`` (subprocesses, real training runs) are left out by
``make test-fast``."""
import os

os.environ.setdefault("GLOG_minloglevel", "2")

import caffe  # noqa: E402
import pytest  # noqa: E402

from core.config import DEFAULT, ROOT  # noqa: E402
from data_prep.build import build_dataset  # noqa: E402
from eval.infer import SRNet  # noqa: E402
from tests.helpers import identity_params, random_slices  # noqa: E402

DEPLOY = ROOT / "models" / "srcnn_relu_deploy.prototxt"


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A data root holding one tiny data set, ``toy`` (3 training and 2 test slices); read-only."""
    root = tmp_path_factory.mktemp("data")
    build_dataset(root / "toy", random_slices(3), random_slices(2, seed=7), DEFAULT, {"sources": []})
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(deploy prototxt, caffemodel) of the identity net (tests.helpers.identity_params)."""
    net = caffe.Net(str(DEPLOY), caffe.TEST)
    for name, arrays in identity_params().items():
        for blob, array in zip(net.params[name], arrays):
            blob.data[...] = array
    path = tmp_path_factory.mktemp("model") / "identity.caffemodel"
    net.save(str(path))
    return DEPLOY, path


@pytest.fixture(scope="module")
def net(model):
    """``SRNet`` of the identity net."""
    return SRNet(*model)
