"""A run directory's final snapshot, found by eval and inference.upscale alike (core.run_files)."""
import json
import shutil

import pytest

from core.errors import DataError
from eval.results import run_model
from inference.upscale import resolve_model
from core.run_files import final_snapshot


def fake_run(run_dir):
    """A run directory as the trainer leaves it: manifest with absolute paths, deploy net,
    snapshots/ (the files' contents do not matter here)."""
    (run_dir / "snapshots").mkdir(parents=True)
    deploy = run_dir / "deploy.prototxt"
    model = run_dir / "snapshots" / "srcnn_iter_20.caffemodel"
    deploy.write_text("name: 'x'\n")
    model.write_bytes(b"weights")
    manifest = {"act": "rrelu", "solver": "nesterov", "files": {"deploy": str(deploy)},
                "snapshots": [{"iter": 10, "caffemodel": str(run_dir / "snapshots" / "old.caffemodel")},
                              {"iter": 20, "caffemodel": str(model)}]}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return deploy, model


def test_the_last_snapshot_and_the_deploy_net(tmp_path):
    deploy, model = fake_run(tmp_path / "run")
    manifest, got_deploy, got_model = final_snapshot(tmp_path / "run")
    assert (got_deploy, got_model) == (deploy, model) and manifest["act"] == "rrelu"
    assert run_model(tmp_path / "run") == ("rrelu_nesterov", str(deploy), str(model))
    assert resolve_model(run=tmp_path / "run") == (deploy, model)


def test_a_moved_run_directory_still_resolves(tmp_path):
    fake_run(tmp_path / "old")
    shutil.move(tmp_path / "old", tmp_path / "new")
    _, deploy, model = final_snapshot(tmp_path / "new")
    assert deploy == tmp_path / "new" / "deploy.prototxt"
    assert model == tmp_path / "new" / "snapshots" / "srcnn_iter_20.caffemodel"


@pytest.mark.parametrize("manifest,message", [
    (None, "not a run directory"),
    ("{not json", "not a run directory"),
    (json.dumps({"act": "relu", "solver": "sgd", "snapshots": []}), "no snapshot yet"),
])
def test_unusable_run_directories_are_one_clear_error(tmp_path, manifest, message):
    if manifest is not None:
        (tmp_path / "manifest.json").write_text(manifest)
    with pytest.raises(DataError, match=message):
        final_snapshot(tmp_path)
