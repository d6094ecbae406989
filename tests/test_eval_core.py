"""Evaluation core: full-image inference (pycaffe and OpenCV), scoring (the metrics are in
tests/test_metrics.py).

Not tested here (no data offline): the bicubic baseline on Set5 x3 should read 30.39 dB / 0.8682.
"""
import caffe
import cv2
import numpy as np
import pytest
from google.protobuf import text_format

from data_prep.degrade import degrade
from core.errors import DataError
from data_prep.matlab import modcrop, rgb2ycbcr
from inference.net import SRNet, sr_image
from eval.score import load_hr_folder, score_method
from core.config import ACTIVATIONS, DEFAULT
from core.nets import deploy_net
from tests.helpers import deploy, random_params, save_caffemodel

pytestmark = pytest.mark.blas  # numbers summed by OpenBLAS (tools/blas_kernels.py)

RNG = np.random.RandomState


# --- inference -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{act: (params, caffemodel path)} with random weights."""
    folder = tmp_path_factory.mktemp("models")
    out = {}
    for seed, act in enumerate(ACTIVATIONS):
        params = random_params(deploy(act), seed)
        out[act] = params, save_caffemodel(deploy(act), params, folder / f"{act}.caffemodel")
    return out


@pytest.fixture(scope="module")
def image():
    return RNG(7).rand(37, 44)


def test_output_size_and_borders(models, image):
    params, model = models["relu"]
    rep = SRNet(deploy("relu"), model)(image)
    bic = SRNet(deploy("relu"), model, border="bicubic")(image)
    assert rep.shape == bic.shape == image.shape
    assert rep.dtype == bic.dtype == np.float64
    inner = np.zeros(image.shape, bool)
    inner[6:-6, 6:-6] = True
    assert (bic[~inner] == image[~inner]).all()  # the frame is the bicubic input, exactly
    assert not np.allclose(bic[inner], image[inner])
    # Far enough from the edge both see the same input pixels.
    np.testing.assert_allclose(rep[12:-12, 12:-12], bic[12:-12, 12:-12], atol=1e-6)
    assert not np.allclose(rep[:6], image[:6])  # replicate computes its frame


def test_replicate_equals_net_on_edge_padded_input(models, image):
    params, model = models["prelu"]
    net = SRNet(deploy("prelu"), model)
    expected = net.forward_valid(np.pad(image, 6, mode="edge"))
    np.testing.assert_array_equal(net(image), expected)
    assert net.lost == (12, 12) and net.receptive_field == (13, 13)


def test_params_equal_caffemodel(models, image):
    params, model = models["leaky"]
    from_file = SRNet(deploy("leaky"), model)(image)
    np.testing.assert_array_equal(SRNet(deploy("leaky"), params=params)(image), from_file)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_opencv_matches_caffe(models, image, act):
    params, model = models[act]
    ours = SRNet(deploy(act), model)
    theirs = SRNet(deploy(act), model, engine="opencv")
    ref = ours(image)
    # The activations' negative parts are exercised, so slopes (ReLU, PReLU) are compared too.
    assert (ours._net.blobs["conv1"].data < 0).mean() > 0.2
    np.testing.assert_allclose(theirs(image), ref, rtol=0, atol=1e-5)
    # Another size on the same objects: both reshape.
    small = RNG(3).rand(20, 15)
    np.testing.assert_allclose(theirs(small), ours(small), rtol=0, atol=1e-5)


def test_sr_image(models):
    params, model = models["rrelu"]
    hr_u8 = RNG(4).randint(0, 256, (31, 35)).astype(np.uint8)
    hr, bicubic, sr = sr_image(SRNet(deploy("rrelu"), model), hr_u8, 3)
    assert hr.shape == bicubic.shape == sr.shape == (30, 33)
    np.testing.assert_array_equal(bicubic, degrade(hr_u8, 3)[1])


def test_missing_caffemodel(tmp_path):
    with pytest.raises(DataError, match="not found"):
        SRNet(deploy("relu"), tmp_path / "nope.caffemodel")


@pytest.mark.parametrize("content", [RNG(0).bytes(1000), RNG(1).bytes(5000), b"", b"layer {"])
def test_corrupt_caffemodel(tmp_path, content):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        SRNet(deploy("relu"), path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_mismatched_shapes(tmp_path):
    # A model of an n1=16 net into the n1=64 deploy net: Caffe would abort the process.
    other = tmp_path / "n1_16.prototxt"
    spec = deploy_net(DEFAULT.with_overrides(["n1=16"]), "relu")
    other.write_text(text_format.MessageToString(spec))
    model = save_caffemodel(str(other), random_params(str(other), 0), tmp_path / "n1_16.caffemodel")
    with pytest.raises(DataError, match="conv1.*do not match"):
        SRNet(deploy("relu"), model)
    with pytest.raises(DataError, match="do not match"):
        SRNet(deploy("relu"), model, engine="opencv")


def test_legacy_blob_dims(models, image, tmp_path):
    # Old caffemodels store blobs as num/channels/height/width (biases 1x1x1xN); Caffe accepts them.
    params, model = models["prelu"]
    proto = caffe.proto.caffe_pb2.NetParameter()
    proto.ParseFromString(open(model, "rb").read())
    for layer in proto.layer:
        for blob in layer.blobs:
            dims = (1,) * (4 - len(blob.shape.dim)) + tuple(blob.shape.dim)
            blob.ClearField("shape")
            blob.num, blob.channels, blob.height, blob.width = dims
    legacy = tmp_path / "legacy.caffemodel"
    legacy.write_bytes(proto.SerializeToString())
    expected = SRNet(deploy("prelu"), model)(image)
    np.testing.assert_array_equal(SRNet(deploy("prelu"), legacy)(image), expected)
    np.testing.assert_allclose(SRNet(deploy("prelu"), legacy, engine="opencv")(image), expected,
                               rtol=0, atol=1e-5)


def test_mismatched_activation(models):
    # PReLU slopes into a ReLU net, and a ReLU model missing the PReLU net's slopes.
    with pytest.raises(DataError, match="act1"):
        SRNet(deploy("relu"), models["prelu"][1])
    with pytest.raises(DataError, match="act1"):
        SRNet(deploy("prelu"), models["relu"][1])
    SRNet(deploy("leaky"), models["relu"][1])  # same parameters: fine


def test_bad_params(models):
    params = dict(models["relu"][0])
    del params["conv3"]
    with pytest.raises(DataError, match="conv3"):
        SRNet(deploy("relu"), params=params)
    with pytest.raises(DataError, match="conv1"):
        SRNet(deploy("relu"), params={**params, "conv1": [np.zeros((16, 1, 9, 9)), np.zeros(16)]})


def test_too_small_image(models):
    model = models["relu"][1]
    tiny = RNG(5).rand(12, 30)
    with pytest.raises(DataError, match="receptive field"):
        SRNet(deploy("relu"), model, border="bicubic")(tiny)
    assert SRNet(deploy("relu"), model)(tiny).shape == (12, 30)  # replicate pads: any size
    assert SRNet(deploy("relu"), model, border="bicubic")(RNG(5).rand(13, 13)).shape == (13, 13)


# --- scoring ---------------------------------------------------------------------------------

def test_score_bicubic_by_hand():
    rng = RNG(6)
    images = [("a", rng.randint(0, 256, (50, 47)).astype(np.uint8)),
              ("b", cv2.GaussianBlur(rng.randint(0, 256, (40, 61)).astype(np.uint8), (7, 7), 2))]
    result = score_method(images, lambda x: x, scale=3)
    by_hand = []
    for (name, img), row in zip(images, result["images"]):
        _, up = degrade(img, 3)
        ref = modcrop(img, 3).astype(np.float64)[3:-3, 3:-3]
        # floor(v + .5) is half away from zero for v >= 0; negatives clip to 0 either way.
        est = np.clip(np.floor(up * 255 + 0.5), 0, 255)[3:-3, 3:-3]
        by_hand.append(10 * np.log10(255 ** 2 / np.mean((ref - est) ** 2)))
        assert row["name"] == name
        assert row["psnr"] == pytest.approx(by_hand[-1], abs=1e-10)
        assert 0 < row["ssim"] < 1
    assert result["mean"]["psnr"] == pytest.approx(np.mean(by_hand), abs=1e-10)
    assert result["mean"]["ssim"] == pytest.approx(np.mean([r["ssim"] for r in result["images"]]))
    assert score_method(images, lambda x: x, border=0)["mean"]["psnr"] != result["mean"]["psnr"]


def test_score_with_a_net_and_too_small(models):
    net = SRNet(deploy("relu"), models["relu"][1])
    img = RNG(8).randint(0, 256, (36, 36)).astype(np.uint8)
    assert set(score_method([("x", img)], net)["mean"]) == {"psnr", "ssim"}
    with pytest.raises(DataError, match="too small"):
        score_method([("tiny", img[:16])], net)


def test_load_hr_folder(tmp_path):
    rng = RNG(9)
    grey = rng.randint(0, 256, (20, 30)).astype(np.uint8)
    rgb = rng.randint(0, 256, (25, 21, 3)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "b_grey.png"), grey)
    cv2.imwrite(str(tmp_path / "a_colour.bmp"), rgb[:, :, ::-1])  # OpenCV writes BGR
    cv2.imwrite(str(tmp_path / "c.jpg"), grey)
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_hr_folder(tmp_path)
    assert [name for name, _ in images] == ["a_colour", "b_grey", "c"]
    np.testing.assert_array_equal(images[0][1], rgb2ycbcr(rgb))
    np.testing.assert_array_equal(images[1][1], grey)
    assert images[2][1].shape == (20, 30) and images[2][1].dtype == np.uint8


def test_load_hr_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no images"):
        load_hr_folder(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        load_hr_folder(tmp_path / "missing")
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read"):
        load_hr_folder(tmp_path)
    (tmp_path / "x.png").unlink()
    cv2.imwrite(str(tmp_path / "deep.png"), np.zeros((16, 16), np.uint16))
    with pytest.raises(DataError, match="8-bit"):
        load_hr_folder(tmp_path)


def test_a_prelu_net_with_one_shared_slope_loads_from_its_caffemodel(tmp_path):
    """Its slope is a 0-d blob, which Caffe stores with no shape field at all: the check before
    Caffe sees the file reads it as Caffe does, not as an empty legacy 4-D blob."""
    prototxt = tmp_path / "shared.prototxt"
    prototxt.write_text(text_format.MessageToString(
        deploy_net(DEFAULT.with_overrides(["prelu_channel_shared=true"]), "prelu")))
    params = random_params(str(prototxt), seed=4)
    assert params["act1"][0].shape == ()
    model = save_caffemodel(str(prototxt), params, tmp_path / "shared.caffemodel")
    image = np.random.RandomState(4).rand(30, 31)
    from_file = SRNet(str(prototxt), model)(image)
    np.testing.assert_array_equal(from_file, SRNet(str(prototxt), params=params)(image))
