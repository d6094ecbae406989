"""`make reference DATASET=D` / `python -m tools.reference`: the long-schedule reference weights.

    python -m tools.reference --dataset prostate [--act relu --solver sgd] [--iters 100000]
                              [--pack-only [--partial]]

Trains the paper's net (RReLU + Nesterov, seed 0, the data set's settings) for ``--iters``
iterations in ``runs/<dataset>/long_schedule/`` (resuming: a run stopped in one sitting continues
byte-exactly in the next), then packs the finished run into ``models/reference/<dataset>/``: its
manifest (config, commit, curve), deploy net, final caffemodel and solver state, small enough to
commit. `make reproduce` scores that folder as the "long schedule" column without training it again.

Where ``runs/<dataset>/long_schedule/`` does not exist (a fresh clone), a packed reference is
unpacked into it first, so ``--iters`` beyond the packed length continues the committed weights
(byte-exactly, on the CPU) instead of starting over.

``--act``/``--solver`` train and pack another variant the same way, for the paper's claims at
the long schedule: in ``runs/<dataset>/long/<act>_<solver>/``, packed into
``models/long/<dataset>/<act>_<solver>/`` (core.run_files.long_pack_dir). ``--pack-only
--partial`` packs a run stopped on the way, which the next ``make reference`` continues.
"""
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")  # before Caffe loads: its INFO lines drown the bar

from core.args import command_line  # noqa: E402
from core.atomic import atomic_dir, write_json_atomic  # noqa: E402
from core.errors import DataError  # noqa: E402
from core.cli import guarded  # noqa: E402
from core.names import PAPER_NET  # noqa: E402
from core.run_files import final_snapshot, long_pack_dir, long_run_dir, read_manifest  # noqa: E402
from tools.train import main as train_main  # noqa: E402

REFERENCE_ITERS = 100000  # long enough to judge the paper's claims, 2.5% of its 4e6 (docs/training.md)


def pack(run, dest, partial=False):
    """Copy a finished run's manifest, deploy net, final caffemodel and solver state into
    ``dest`` (atomically), with the manifest's paths made relative to ``dest`` and only the final
    snapshot listed. ``partial``: a run stopped on the way too (its last snapshot), so that a long
    schedule trained over several sittings on several machines can be committed and continued."""
    dest = Path(dest)
    manifest, deploy, caffemodel = final_snapshot(run)
    if manifest.get("status") != "done" and not partial:
        raise DataError(f"{run}: the run is not finished ({manifest.get('iterations_done')} of "
                        f"{manifest['config']['max_iter']} iterations): train it first")
    with atomic_dir(dest) as tmp:
        shutil.copy2(deploy, tmp / "deploy.prototxt")
        shutil.copy2(caffemodel, tmp / caffemodel.name)
        state = caffemodel.with_suffix(".solverstate")  # the trainer writes the two side by side
        shutil.copy2(state, tmp / state.name)
        final = dict(manifest["snapshots"][-1], caffemodel=caffemodel.name, solverstate=state.name)
        packed = dict(manifest, reference=True, snapshots=[final],
                      files={"deploy": "deploy.prototxt"}, trained_in=str(Path(run).resolve()))
        write_json_atomic(tmp / "manifest.json", packed)
    return dest


def unpack(ref, run):
    """Make the run directory ``run`` from the packed reference ``ref`` so that the trainer's
    ``--resume`` continues it: its snapshot and solver state, and its manifest with their paths
    and no net files (the trainer writes the nets for this checkout). Nothing when ``run`` has a
    manifest already or ``ref`` has no solver state (packed before they were)."""
    ref, run = Path(ref), Path(run)
    manifest = read_manifest(ref)
    final = ((manifest or {}).get("snapshots") or [{}])[-1]
    if read_manifest(run) is not None or not final.get("solverstate"):
        return False
    with atomic_dir(run) as tmp:
        (tmp / "snapshots").mkdir()
        paths = {}
        for key in ("caffemodel", "solverstate"):
            shutil.copy2(ref / final[key], tmp / "snapshots" / final[key])
            paths[key] = f"snapshots/{final[key]}"  # relative to the run directory
        unpacked = {k: v for k, v in manifest.items() if k not in ("reference", "trained_in")}
        unpacked.update(snapshots=[dict(final, **paths)], files={}, unpacked_from=str(ref.resolve()))
        write_json_atomic(tmp / "manifest.json", unpacked)
    return True


def main(argv=None):
    p = command_line("tools.reference", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--act", default=PAPER_NET[0], help="default: the paper's net")
    p.add_argument("--solver", default=PAPER_NET[1], help="default: the paper's net")
    p.add_argument("--iters", type=int, default=REFERENCE_ITERS)
    p.add_argument("--pack-only", action="store_true", help="pack the run as it is, train nothing")
    p.add_argument("--partial", action="store_true", help="with --pack-only: a run not finished too")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    args = p.parse_args(argv)
    if args.partial and not args.pack_only:
        p.error("--partial goes with --pack-only")
    run = long_run_dir(args.dataset, args.act, args.solver)
    packed = long_pack_dir(args.dataset, args.act, args.solver)
    if not args.pack_only and unpack(packed, run):
        print(f"reference: continuing the packed {packed} in {run}")
    if not args.pack_only:
        code = train_main(["--dataset", args.dataset, "--act", args.act, "--solver", args.solver,
                           "--resume", "--iters", str(args.iters), "--run-dir", str(run), *args.overrides])
        if code != 0:
            return code
    return guarded("reference", lambda: report_pack(pack(run, packed, args.partial)))


def report_pack(dest):
    manifest = json.loads((dest / "manifest.json").read_text())
    print(f"reference: {dest} ({manifest['iterations_done']} iterations, test PSNR "
          f"{manifest['tests'][-1]['psnr']:.2f} dB, bicubic {manifest['bicubic']['psnr']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
