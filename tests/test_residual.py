"""The residual flag (core/nets.py): conv3 plus the centre of the input. With conv3 at zero the
net returns its input exactly, in the deploy net through both engines (any size, tiled or not) and
in the train_val net's loss; with it off the nets are the paper's, with no Crop or Eltwise."""
import caffe
import numpy as np
import pytest
from google.protobuf import text_format

from core.config import DEFAULT
from core.nets import deploy_net, train_val_net
from inference.net import SRNet
from tests.helpers import random_params, save_caffemodel, tiny_net_files

pytestmark = pytest.mark.blas  # numbers summed by OpenBLAS (tools/blas_kernels.py)

RESIDUAL = DEFAULT.with_overrides(["residual=true"])


def layer_types(net):
    return [layer.type for layer in net.layer]


def test_the_flag_adds_a_crop_and_a_sum_and_nothing_else():
    assert "Crop" not in layer_types(deploy_net(DEFAULT, "rrelu"))
    plain, residual = layer_types(deploy_net(DEFAULT, "rrelu")), layer_types(deploy_net(RESIDUAL, "rrelu"))
    assert residual == plain + ["Crop", "Eltwise"]
    crop = [layer for layer in deploy_net(RESIDUAL, "rrelu").layer if layer.type == "Crop"][0]
    assert list(crop.bottom) == ["data", "conv3"] and list(crop.crop_param.offset) == [6]


@pytest.fixture(scope="module")
def zero_conv3(tmp_path_factory):
    """(deploy prototxt, caffemodel) of the residual RReLU net with random conv1-2, zero conv3."""
    folder = tmp_path_factory.mktemp("residual")
    prototxt = folder / "deploy.prototxt"
    prototxt.write_text(text_format.MessageToString(deploy_net(RESIDUAL, "rrelu")))
    params = random_params(str(prototxt), seed=3)
    params["conv3"] = [np.zeros_like(a) for a in params["conv3"]]
    return str(prototxt), save_caffemodel(str(prototxt), params, folder / "zero.caffemodel")


@pytest.mark.parametrize("engine", ["caffe", "opencv"])
@pytest.mark.parametrize("budget", [1e6, 60])  # one pass, and several tiles
def test_zero_conv3_returns_the_input(zero_conv3, engine, budget):
    x = np.random.RandomState(0).rand(700, 501).astype(np.float32)
    net = SRNet(*zero_conv3, engine=engine, budget_mb=budget)
    assert (len(net._tiles.tile_plan(x.shape)) > 1) == (budget < 1e6)
    np.testing.assert_array_equal(net(x), x)


def test_the_training_loss_starts_at_the_input_centre(tmp_path):
    files = tiny_net_files(RESIDUAL, "rrelu", "nesterov", tmp_path)
    net = caffe.Net(str(files["train_val"]), caffe.TEST)
    for blob in net.params["conv3"]:
        blob.data[...] = 0
    net.forward()
    centre = net.blobs["data"].data[:, :, 6:-6, 6:-6]
    expected = ((centre - net.blobs["label"].data) ** 2).sum() / 2 / len(centre)
    assert float(net.blobs["loss"].data) == pytest.approx(expected, rel=1e-5)
