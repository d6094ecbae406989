"""ONNX export (`make export`, inference.export, inference.onnx_graph) and the third engine, `--engine onnx`:
each layer kind translates to within the float32 bound of pycaffe's output in ONNX Runtime and
OpenCV, a mistranslation is caught by that check, untranslatable nets and user mistakes are one
line, the committed reference files equal their caffemodels, and eval and inference.upscale run the
engine with pycaffe's results."""
import json
import re
import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from core.config import DATASETS, DEFAULT, ROOT
from core.errors import DataError
from core.nets import deploy_net
from data_prep.matlab import imresize
from data_prep.sources import sha256
from eval.__main__ import main as eval_main
from inference.export import engine_outputs, main as export_main, verification_image, verify
from inference.net import SRNet
from eval.metrics import METRICS, to_uint8
from inference.rounding import forward_bound
from inference.upscale import main as upscale_main
from tests.helpers import (assert_within_one_level, clean_env, eval_tables, make, make_run, random_params,
                           random_slices, save_caffemodel, write_png)

pytestmark = pytest.mark.blas  # pycaffe's side is summed by OpenBLAS (tools/blas_kernels.py)

# name -> the config overrides and activation of a deploy net with that layer kind
KINDS = {"relu": ([], "relu"), "rrelu": ([], "rrelu"), "leaky": ([], "leaky"),
         "prelu": ([], "prelu"), "prelu_shared": (["prelu_channel_shared=true"], "prelu"),
         "residual": (["residual=true"], "rrelu")}
OPS = {"relu": "Relu", "rrelu": "LeakyRelu", "leaky": "LeakyRelu", "prelu": "PRelu",
       "prelu_shared": "PRelu", "residual": "Slice"}


def write_deploy(path, proto):
    path.write_text(text_format.MessageToString(proto))
    return str(path)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """{kind: (deploy prototxt, caffemodel, params)} with random weights (std 0.1, biases too)."""
    folder, out = tmp_path_factory.mktemp("export_nets"), {}
    for seed, (kind, (overrides, act)) in enumerate(KINDS.items()):
        prototxt = write_deploy(folder / f"{kind}.prototxt",
                                deploy_net(DEFAULT.with_overrides(overrides), act))
        params = random_params(prototxt, seed)
        out[kind] = prototxt, save_caffemodel(prototxt, params, folder / f"{kind}.caffemodel"), params
    return out


@pytest.fixture(scope="module")
def image():
    """A float32 input with negative pre-activations for the slopes to matter (36x41: odd)."""
    return np.random.RandomState(3).rand(36, 41).astype(np.float32)


def ops(model):
    return [node.op_type for node in model.graph.node]


@pytest.mark.parametrize("kind", KINDS)
def test_each_layer_kind_runs_as_in_pycaffe(nets, image, kind):
    prototxt, _, params = nets[kind]
    # params, not the caffemodel: inference.caffemodel refuses a shared PReLU slope's 0-d blob
    net = SRNet(prototxt, params=params)
    model = net.to_onnx()
    assert OPS[kind] in ops(model) and ops(model).count("Conv") == 3
    assert (net.forward_valid(image) != 0).any()
    found = verify(model, net, prototxt, image)  # raises beyond the bound
    assert found["onnxruntime"] < 1e-5 and found["opencv"] < 1e-5
    if kind in ("rrelu", "leaky"):  # the float32 slope of the prototxt, 2/11
        alphas = {a.f for n in model.graph.node for a in n.attribute if a.name == "alpha"}
        assert alphas == {float(np.float32(2 / 11))}
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, "height", "width"]


def set_initializer(model, name, values):
    index = [i.name for i in model.graph.initializer].index(name)
    model.graph.initializer[index].CopyFrom(onnx.numpy_helper.from_array(
        np.array(values, np.int64), name))


def slope_of_a_fifth(model):
    next(a for n in model.graph.node for a in n.attribute if a.name == "alpha").f = 0.2


def crop_a_row_higher(model):
    set_initializer(model, "centre.starts", [5, 6])
    set_initializer(model, "centre.ends", [-7, -6])


@pytest.mark.parametrize("kind,mutate", [("rrelu", slope_of_a_fifth),
                                         ("residual", crop_a_row_higher)])
def test_the_check_catches_a_graph_that_is_not_the_net(nets, image, kind, mutate):
    """A slope of 0.2 for 2/11, or a crop one row off: beyond the bound, refused."""
    prototxt, caffemodel, _ = nets[kind]
    net = SRNet(prototxt, caffemodel)
    model = net.to_onnx()
    mutate(model)
    with pytest.raises(DataError, match="differs from pycaffe by .* beyond the float32 bound"):
        verify(model, net, prototxt, image)


def extra_layer(proto, **fields):
    layer = proto.layer.add()
    for key, value in fields.items():
        if isinstance(value, dict):
            text_format.Parse(value["text"], getattr(layer, key))
        elif isinstance(value, list):
            getattr(layer, key).extend(value)
        else:
            setattr(layer, key, value)
    return proto


def untranslatable():
    """(name, deploy NetParameter, what the message names) for nets that cannot be exported."""
    tanh = extra_layer(deploy_net(DEFAULT, "relu"), name="squash", type="TanH",
                       bottom=["conv3"], top=["squash"])
    strided = deploy_net(DEFAULT, "relu")
    strided.layer[1].convolution_param.stride[:] = [2]
    prod = deploy_net(DEFAULT.with_overrides(["residual=true"]), "relu")
    prod.layer[-1].eltwise_param.operation = caffe_pb2.EltwiseParameter.PROD
    return [("tanh", tanh, "'squash' has type TanH"), ("strided", strided, "'conv1'"),
            ("prod", prod, "'sr' (Eltwise)")]


@pytest.mark.parametrize("name,proto,says", untranslatable(),
                         ids=[case[0] for case in untranslatable()])
def test_a_net_it_cannot_translate_is_one_line_naming_the_layer(tmp_path, name, proto, says,
                                                                 capsys):
    prototxt = write_deploy(tmp_path / "deploy.prototxt", proto)
    run = make_run(tmp_path, (prototxt, save_caffemodel(prototxt, random_params(prototxt, 1),
                                                        tmp_path / "w.caffemodel")))
    out = tmp_path / "net.onnx"
    assert export_main(["--run", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("export: error: layer ") and says in err
    assert not out.exists() and not list(tmp_path.glob(".net.onnx*"))


def trainer_run(folder, model, **fields):
    """``make_run``'s run directory of ``model``, with a trainer's manifest fields."""
    run = make_run(folder, model)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest |= {"act": "rrelu", "solver": "nesterov", "seed": 2, **fields}
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, nets):
    """A run directory of the residual rrelu net."""
    return trainer_run(tmp_path_factory.mktemp("export_run"), nets["residual"][:2],
                       dataset="breast", config={"scale": 3, "residual": True})


def test_export_writes_a_verified_file_with_its_metadata(run_dir, tmp_path, capsys):
    out = tmp_path / "sub" / "model.onnx"
    assert export_main(["--run", str(run_dir), "--out", str(out)]) == 0
    assert "verified against pycaffe" in capsys.readouterr().out
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 13
    meta = {p.key: p.value for p in model.metadata_props}
    assert {k: meta[k] for k in ("scale", "shrink_per_side", "variant", "iterations", "dataset",
                                 "seed", "residual")} == {
        "scale": "3", "shrink_per_side": "6", "variant": "rrelu_nesterov", "iterations": "20",
        "dataset": "breast", "seed": "2", "residual": "true"}
    assert meta["source_manifest_sha256"] == sha256(run_dir / "manifest.json")
    assert "[0, 1]" in meta["input"] and "edge replication" in meta["border"]
    # the file itself, read by OpenCV from disk, is the net
    net = SRNet(str(run_dir / "deploy.prototxt"), str(run_dir / "snapshots" /
                                                      "srcnn_iter_20.caffemodel"))
    x = np.random.RandomState(0).rand(30, 30).astype(np.float32)
    cv = cv2.dnn.readNetFromONNX(str(out))
    cv.setInput(x[None, None])
    assert np.abs(cv.forward()[0, 0] - net.forward_valid(x)).max() < 1e-5
    assert export_main(["--run", str(run_dir), "--out", str(out)]) == 2  # exists, no --force
    assert export_main(["--run", str(run_dir), "--out", str(out), "--force"]) == 0


@pytest.mark.parametrize("args,says", [
    (["--out", "{tmp}"], "--out is a folder"),
    (["--out", "{tmp}/f/x.onnx"], "which is a file"),
    (["--reference", "liver", "--out", "{tmp}/x.onnx"], "--reference liver: no models/reference/liver/"),
    (["--run", "{tmp}/nowhere", "--out", "{tmp}/x.onnx"], "not a run directory"),
])
def test_user_mistakes_are_one_line_exit_2(tmp_path, capsys, args, says):
    (tmp_path / "f").write_text("a file")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--run" not in args and "--reference" not in args:
        args += ["--reference", "prostate"]
    try:
        code = export_main(args)
    except SystemExit as exc:  # the parser's own errors: one line too
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("export: error: ") and says in err
    assert not list(tmp_path.rglob("*.onnx*"))


# ---------------------------------------------------------------- the committed reference nets

@pytest.mark.parametrize("dataset", DATASETS)
def test_committed_onnx_equals_its_caffemodel(dataset):
    ref = ROOT / "models" / "reference" / dataset
    if not (ref / "manifest.json").is_file():
        pytest.skip(f"models/reference/{dataset}/ is not trained yet")
    model = onnx.load(str(ref / "model.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    manifest = json.loads((ref / "manifest.json").read_text())
    caffemodel = ref / manifest["snapshots"][-1]["caffemodel"]
    assert meta["source_manifest_sha256"] == sha256(ref / "manifest.json"), \
        f"stale: make export REFERENCE={dataset} OUT=models/reference/{dataset}/model.onnx FORCE=1"
    assert meta["source_caffemodel_sha256"] == sha256(caffemodel)
    net = SRNet(ref / "deploy.prototxt", caffemodel)
    x = verification_image(net, int(meta["scale"]))[100:180, 150:240]  # a real slice, cut small
    ours = net.forward_valid(x)
    limit = 2 * forward_bound(str(ref / "deploy.prototxt"), net.weights(), x)[1]
    for engine, out in engine_outputs(model, x).items():
        assert (np.abs(out - ours) <= limit).all(), engine


def test_the_documented_snippet_super_resolves_a_slice(tmp_path):
    """docs/onnx.md's code, run as written (the model's path made absolute), gives the pycaffe
    pipeline's image within one grey level."""
    code = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "onnx.md").read_text(), re.S)[1]
    code = code.replace('"models/reference/', f'"{ROOT}/models/reference/')
    lr = random_slices(1, shape=(40, 50), seed=4)[0].image
    write_png(tmp_path / "slice.png", lr)
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True,
                   env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    sr = cv2.imread(str(tmp_path / "slice_x3.png"), cv2.IMREAD_UNCHANGED)
    ref = ROOT / "models" / "reference" / "prostate"
    net = SRNet(ref / "deploy.prototxt", ref / "srcnn_iter_100000.caffemodel")
    expected = to_uint8(np.clip(net(imresize(lr / 255.0, 3)), 0, 1))
    assert sr.shape == expected.shape == (120, 150)
    assert_within_one_level(sr, expected)


# ------------------------------------------------------------------------ the engine

def test_onnx_tiles_equal_one_pass_within_the_bound(nets):
    prototxt, caffemodel, _ = nets["prelu"]
    x = np.random.RandomState(5).rand(150, 170)
    whole = SRNet(prototxt, caffemodel, engine="onnx")
    tiled = SRNet(prototxt, caffemodel, engine="onnx", budget_mb=2)
    assert len(whole.tile_plan(x.shape)) == 1 and len(tiled.tile_plan(x.shape)) > 4
    limit = 2 * forward_bound(prototxt, whole.weights(), np.pad(x, 6, mode="edge"))[1]
    assert (np.abs(tiled(x) - whole(x)) <= limit).all()


def test_onnx_engine_takes_params_as_the_trainer_gives_them(nets, image):
    prototxt, caffemodel, _ = nets["leaky"]
    from_file = SRNet(prototxt, caffemodel, engine="onnx")
    from_params = SRNet(prototxt, params=from_file.weights(), engine="onnx")
    np.testing.assert_array_equal(from_params(image), from_file(image))


@pytest.fixture(scope="module")
def scored(tmp_path_factory, nets):
    """(run, folder of HR test images) for eval and inference.upscale."""
    folder = tmp_path_factory.mktemp("export_eval")
    run = trainer_run(folder, nets["rrelu"][:2])
    (folder / "hr").mkdir()
    for s in random_slices(2, shape=(60, 57), seed=9):
        write_png(folder / "hr" / f"{s.name}.png", s.image)
    return run, folder / "hr"


def test_eval_prints_the_same_means_with_onnx_as_with_caffe(scored, tmp_path, capsys):
    run, hr = scored
    lines = {}
    for engine in ("caffe", "onnx"):
        out = tmp_path / engine
        assert eval_main(["--hr", str(hr), "--runs", str(run), "--engine", engine, *eval_tables(out)]) == 0
        lines[engine] = capsys.readouterr().out
    # two methods (bicubic, the run), each metric's mean as the tables print it
    assert lines["onnx"] == lines["caffe"] and len(lines["caffe"].splitlines()) == 2
    assert all(m.title in lines["onnx"] for m in METRICS.values())


def test_upscale_with_the_onnx_engine(scored, tmp_path):
    run, hr = scored
    src = next(hr.glob("*.png"))
    outs = {}
    for engine in ("caffe", "onnx"):
        outs[engine] = tmp_path / f"{engine}.png"
        assert upscale_main(["--in", str(src), "--out", str(outs[engine]), "--run", str(run),
                             "--engine", engine]) == 0
    caffe_img, onnx_img = (cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in outs.values())
    assert caffe_img.shape == (180, 171)
    assert_within_one_level(onnx_img, caffe_img)


@pytest.mark.slow
def test_make_export_passes_paths_as_given(tmp_path):
    """`make export` from another folder: OUT relative to it, with a space and a quote."""
    out = tmp_path / "it's here" / "p.onnx"
    out.parent.mkdir()
    proc = make("-C", str(ROOT), "export", "REFERENCE=prostate", "OUT=it's here/p.onnx",
                cwd=tmp_path, env=clean_env(PWD=str(tmp_path)))  # PWD: as a shell there sets it
    assert proc.returncode == 0, proc.stderr
    assert {p.key for p in onnx.load(str(out)).metadata_props} >= {"scale", "dataset"}
