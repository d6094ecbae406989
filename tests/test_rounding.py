"""inference.rounding's bound: Caffe's float32 output of every kind of deploy net (each activation, the
residual variant) lies within it of the exact output it computes alongside, whatever kernel
OpenBLAS runs; the exact output is the convolution's definition (checked against a direct sum);
the bound is far below the output's range (a bound that allowed anything would pass the first
check too); layers it cannot bound are refused."""
import caffe
import numpy as np
import pytest
from google.protobuf import text_format

from core.config import DEFAULT
from core.nets import deploy_net
from inference.rounding import U, forward_bound, gamma
from tests.helpers import deploy, random_params

pytestmark = pytest.mark.blas


def caffe_output(prototxt, params, image):
    net = caffe.Net(prototxt, caffe.TEST)
    for name, arrays in params.items():
        for blob, array in zip(net.params[name], arrays):
            blob.data[...] = array
    net.blobs["data"].reshape(1, 1, *image.shape)
    net.reshape()
    net.blobs["data"].data[0, 0] = image
    net.forward()
    return net.outputs[0], net.blobs[net.outputs[0]].data[0, 0].astype(np.float64), net


def residual_deploy(tmp_path):
    path = tmp_path / "residual.prototxt"
    path.write_text(text_format.MessageToString(deploy_net(DEFAULT.with_overrides(["residual=true"]), "rrelu")))
    return str(path)


@pytest.mark.parametrize("act", ["relu", "rrelu", "leaky", "prelu", "residual"])
def test_caffes_output_lies_within_the_bound(act, tmp_path):
    prototxt = residual_deploy(tmp_path) if act == "residual" else deploy(act)
    params = random_params(prototxt, seed=7)
    image = np.random.RandomState(1).rand(57, 43).astype(np.float32) * 1.2 - 0.1
    _, got, net = caffe_output(prototxt, params, image)
    value, bound = forward_bound(prototxt, net, image)
    assert value.shape == bound.shape == got.shape
    assert np.all(np.abs(got - value) <= bound)
    assert bound.max() < 1e-2 * np.ptp(value)


def test_the_exact_output_is_the_convolutions_definition():
    """conv1 of the ReLU net alone, summed term by term in float64 at a few pixels."""
    prototxt = deploy("relu")
    params = random_params(prototxt, seed=2)
    image = np.random.RandomState(2).rand(30, 30).astype(np.float32)
    value, _ = forward_bound(prototxt, params, image)
    w1, b1 = params["conv1"]
    w2, b2 = params["conv2"]
    w3, b3 = params["conv3"]
    x = image.astype(np.float64)
    act1 = np.array([[[max(0.0, (w1[o, 0] * x[i:i + 9, j:j + 9]).sum() + b1[o]) for j in range(22)]
                      for i in range(22)] for o in range(64)])
    act2 = np.maximum(0, np.einsum("oc,chw->ohw", w2[:, :, 0, 0], act1) + b2[:, None, None])
    for i, j in ((0, 0), (5, 11), (17, 17)):
        want = (w3[0] * act2[:, i:i + 5, j:j + 5]).sum() + b3[0]
        assert value[i, j] == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_gamma_is_highams_and_refuses_sums_too_long_to_bound():
    assert gamma(81) == pytest.approx(81 * U / (1 - 81 * U), rel=1e-15)
    with pytest.raises(ValueError, match="no useful error bound"):
        gamma(2 ** 24)


def test_layers_it_cannot_bound_are_refused(tmp_path):
    prototxt = tmp_path / "sigmoid.prototxt"
    prototxt.write_text(open(deploy("relu")).read().replace('type: "ReLU"', 'type: "Sigmoid"'))
    params = random_params(str(prototxt), seed=0)
    with pytest.raises(ValueError, match="no rounding bound for layer type Sigmoid"):
        forward_bound(str(prototxt), params, np.zeros((20, 20), np.float32))
