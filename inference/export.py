"""`make export` / `python -m inference.export`: a trained net as an ONNX file, verified before it is
written.

    python -m inference.export (--run RUN_DIR | --reference DATASET) --out model.onnx [--force]

The graph is ``inference.onnx_graph``'s (opset 13, float32, free batch, height and width) of the run's
deploy net and last snapshot, with ``metadata_props`` that say how to use it (``metadata``: the
scale, the input convention, the pixels the valid convolutions lose per side, the border, the
post-processing, variant, iterations, data set, and the SHA-256 of the run's manifest and
caffemodel). Before anything is written the export is verified: onnx.checker's full check, then
ONNX Runtime and OpenCV DNN (``cv2.dnn.readNetFromONNX``) run it on a real test image (a ProstateX
test slice, shipped in data_prep/sources, degraded at the run's scale as the evaluation does and
padded as ``--border replicate`` pads), and each must equal pycaffe's output on every pixel within
twice ``inference.rounding``'s bound: the most two float32 evaluations of the net, summing in any
order, can differ (docs/exactness.md). A net it cannot translate is refused, naming the layer.

Errors are one line, ``export: error: ...`` on stderr, exit code 2 (1 for a file system error);
the file is written under a temporary name and renamed when whole. An existing --out is refused
unless --force, and --force replaces only an ONNX file this project wrote (its producer name,
``inference.onnx_graph.PRODUCER``), never a file of the run or anything else (``core.outputs``).
"""
if __name__ == "__main__":  # Ctrl-C while Caffe and OpenCV load: no traceback (core.cli)
    from core.cli import exit_quietly_until_main
    exit_quietly_until_main()

import os

os.environ.setdefault("GLOG_minloglevel", "2")  # before Caffe loads: keep errors to one line

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from core.atomic import atomic_path  # noqa: E402
from core.args import command_line  # noqa: E402
from core.cli import check_writable, guarded  # noqa: E402
from core.config import DEFAULT  # noqa: E402
from core.errors import DataError  # noqa: E402
from core.names import variant  # noqa: E402
from core.outputs import check_replace  # noqa: E402
from core.run_files import final_snapshot  # noqa: E402
from data_prep.degrade import degrade  # noqa: E402
from data_prep.sources import prostate, sha256  # noqa: E402
from inference.runs import display_path, reference_run, run_folder, run_scale  # noqa: E402

VERIFIED_ENGINES = ("onnxruntime", "opencv")


# ---------------------------------------------------------------------------- the file

def metadata(run_dir, manifest, caffemodel, net, scale):
    """``metadata_props`` of an export: what a user of the file needs to feed it right."""
    (top, bottom), (left, right) = ((n // 2, n - n // 2) for n in net.lost)
    shrink = str(top) if top == bottom == left == right else \
        f"top {top}, bottom {bottom}, left {left}, right {right}"
    act, solver = manifest.get("act"), manifest.get("solver")
    props = {
        "scale": scale,
        "input": f"N x 1 x H x W float32: the slice upscaled x{scale} by MATLAB's bicubic "
                 "imresize (data_prep.matlab.imresize), grey levels / 255, so [0, 1] for 8-bit",
        "output": f"N x 1 x (H - {top + bottom}) x (W - {left + right}) float32: the SR estimate "
                  "of the input's centre, [0, 1] scale, neither clipped nor quantised",
        "shrink_per_side": shrink,
        "border": f"the convolutions are valid (unpadded): pad the input by {shrink} px per side "
                  "with edge replication for an output of its size (medsr-caffe's --border "
                  "replicate, the default), or keep the bicubic values in that frame (--border "
                  "bicubic)",
        "postprocess": "clip to [0, 1], then uint8(255 y) rounded half away from zero "
                       "(MATLAB's uint8; eval.metrics.to_uint8)",
        "variant": variant(act, solver) if act and solver else None,
        "act": act, "solver": solver, "seed": manifest.get("seed"),
        "iterations": manifest["snapshots"][-1].get("iter"),
        "dataset": manifest.get("dataset"),
        "residual": (manifest.get("config") or {}).get("residual"),
        "source_run": display_path(run_dir),
        "source_manifest_sha256": sha256(Path(run_dir) / "manifest.json"),
        "source_caffemodel_sha256": sha256(caffemodel),
    }
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in props.items()
            if v is not None}


def check_out(out, force, inputs=()):
    """DataError unless ``out`` may be written: not a folder, in a place this process can write,
    and not there, or (with ``force``) an ONNX file this project wrote that is none of
    ``inputs``, the files the export reads (``core.outputs.check_replace``)."""
    out = Path(out)
    if out.is_dir():
        raise DataError(f"{out}: --out is a folder; name the .onnx file to write")
    check_writable(out)
    check_replace(out, onnx_refusal, force, inputs)


def onnx_refusal(path):
    """None when ``path`` is an ONNX file this project wrote (its producer name); else why not."""
    from inference.onnx_graph import PRODUCER
    try:
        import onnx
        if onnx.load(str(path), load_external_data=False).producer_name == PRODUCER:
            return None
    except Exception:  # not ONNX (a caffemodel, a text), or unreadable: not this project's
        pass
    return f"it carries no mark of this project (the ONNX producer name {PRODUCER!r})"


def run_inputs(run_dir):
    """The files an export of ``run_dir`` reads (its manifest, deploy net and last snapshot),
    never to be written over; none where the run is unusable (the export says why, later)."""
    try:
        _, deploy, caffemodel = final_snapshot(run_dir)
    except DataError:
        return []
    return [Path(run_dir) / "manifest.json", deploy, caffemodel]


# ---------------------------------------------------------------------- verification

def verification_image(net, scale):
    """The net's input for the check: the middle ProstateX test slice (shipped with the code, so
    every checkout has it), bicubic-degraded x``scale`` and edge-padded by the pixels the net
    loses, as eval runs it (float32)."""
    test = prostate(DEFAULT)[1]
    _, upscaled = degrade(test[len(test) // 2].image, scale)
    frame = tuple((n // 2, n - n // 2) for n in net.lost)
    return np.pad(upscaled, frame, mode="edge").astype(np.float32)


def engine_outputs(model, x):
    """{engine: float64 output} of ONNX ``model`` on the 2-D float32 ``x`` in ONNX Runtime and
    OpenCV DNN."""
    import cv2

    from inference.onnx_graph import ort_session
    session = ort_session(model)
    ort = session.run(None, {session.get_inputs()[0].name: x[None, None]})[0]
    reader = cv2.dnn.readNetFromONNX(np.frombuffer(model.SerializeToString(), np.uint8))
    reader.setInput(x[None, None])
    return {"onnxruntime": ort[0, 0].astype(np.float64),
            "opencv": reader.forward()[0, 0].astype(np.float64)}


def verify(model, net, deploy, x):
    """{engine: largest |difference| to pycaffe, "bound": the smallest per-pixel bound}: ``model``
    passes onnx.checker's full check, and ONNX Runtime's and OpenCV's outputs on ``x`` equal
    pycaffe's (``net``, an ``inference.net.SRNet``) within twice ``inference.rounding``'s bound on every
    pixel; DataError otherwise."""
    from inference.onnx_graph import check
    from inference.rounding import forward_bound
    check(model)
    ours = net.forward_valid(x)
    limit = 2 * forward_bound(deploy, net.weights(), x)[1]
    found = {}
    for engine, out in engine_outputs(model, x).items():
        if out.shape != ours.shape:
            raise DataError(f"verification: {engine} gives shape {out.shape}, pycaffe "
                            f"{ours.shape}")
        diff = np.abs(out - ours)
        worst = np.unravel_index(np.argmax(diff - limit), diff.shape)
        if diff[worst] > limit[worst]:
            raise DataError(f"verification: {engine} differs from pycaffe by {diff[worst]:.3g} at "
                            f"pixel {tuple(map(int, worst))}, beyond the float32 bound "
                            f"{limit[worst]:.3g}: the graph is not the net")
        found[engine] = float(diff.max())
    return found | {"bound": float(limit.min())}


# ---------------------------------------------------------------------------- export

def export(run_dir, out):
    """Write the ONNX file of a run's last snapshot to ``out`` after verifying it; returns
    ``verify``'s differences."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise DataError(f"{exc.name} is not installed in this Python (make setup installs it "
                        "into .venv)") from None
    from inference.net import SRNet  # imports Caffe: only once the paths are known good
    manifest, deploy, caffemodel = final_snapshot(run_dir)
    scale = run_scale(run_dir, manifest)
    net = SRNet(deploy, caffemodel, engine="caffe")
    model = net.to_onnx(metadata(run_dir, manifest, caffemodel, net, scale))
    found = verify(model, net, deploy, verification_image(net, scale))
    with atomic_path(out) as tmp:
        tmp.write_bytes(model.SerializeToString())
    return found


def parse_args(argv):
    p = command_line("inference.export", description=__doc__.splitlines()[0])
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--run", type=Path, help="run directory: its last snapshot and deploy net")
    model.add_argument("--reference", metavar="DATASET",
                       help="the committed long-schedule weights models/reference/DATASET/")
    p.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out that this project exported")
    args = p.parse_args(argv)
    args.run = reference_run(args.reference, p) if args.reference else run_folder(args.run)
    return args


def main(argv=None):
    args = parse_args(argv)
    return guarded("export", lambda: run(args), left="; nothing was written")


def run(args):
    check_out(args.out, args.force, run_inputs(args.run))
    found = export(args.run, args.out)
    diffs = ", ".join(f"{e} {found[e]:.2g}" for e in VERIFIED_ENGINES)
    print(f"export: {args.out}: verified against pycaffe (largest difference: {diffs}; the "
          f"float32 bound is {found['bound']:.2g} or more per pixel)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
