"""The trainer's loop (`python -m tools.train`): a run's solver, restored exactly from a checked
snapshot, stepped to max_iter with Caffe's generator reseeded each iteration, tested and
snapshotted at their intervals, stopped cleanly by a signal or a diverged loss; and what the run
says at its end, with its exit status."""
import math
import os
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")  # before Caffe loads: its INFO lines would drown the bar

import caffe  # noqa: E402
import h5py  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from core.config import ROOT, SOLVERS  # noqa: E402
from core.data_files import list_file  # noqa: E402
from core.run_files import now, record_machine, run_path, save_manifest  # noqa: E402
from tools import snapshots  # noqa: E402
from tools.periodic_test import ImageScorer  # noqa: E402
from tools.train_progress import StepTimes, progress_style, step_ms  # noqa: E402
from tools.train_run_dir import TrainError, prepare_run  # noqa: E402


def iteration_seed(random_seed, iteration):
    """Caffe's generator state for one iteration: a function of the seed and the iteration only."""
    return int(np.random.SeedSequence([random_seed, iteration]).generate_state(1)[0])


def data_period(data_dir, batch):
    """Batches after which the HDF5Data layer (no shuffle) is back at its first row."""
    rows = 0
    for name in list_file(data_dir, "train").read_text().split():
        with h5py.File(name if Path(name).is_absolute() else ROOT / name) as f:
            rows += len(f["data"])
    return rows // np.gcd(rows, batch)


def advance_data_layer(solver, batches):
    """Run the train net's first layer (HDF5Data) alone ``batches`` times."""
    net = solver.net
    if net.layers[0].type != "HDF5Data":
        raise TrainError("the train net's first layer is not HDF5Data: cannot restore its position")
    for _ in range(batches):
        net._forward(0, 0)


class StopRequest:
    """SIGINT/SIGTERM handler: remember the signal; the loop stops after the current iteration."""

    def __init__(self):
        self.signum = None
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self.handle)

    def handle(self, signum, _frame):
        self.signum = signum


def solver_type(manifest):
    """Caffe's name of the run's solver ("SGD", "Nesterov"; a user's solver file's type)."""
    if manifest.get("solver_file"):
        return manifest["solver_file"]["type"] or "SGD"
    return SOLVERS[manifest["solver"]]


def snapshot(solver, run_dir, manifest):
    """Write .caffemodel/.solverstate at the current iteration, whole (tools.snapshots), and
    record them."""
    if manifest["snapshots"] and manifest["snapshots"][-1]["iter"] == solver.iter:
        return
    manifest["snapshots"].append(snapshots.write(solver, run_dir, solver_type(manifest)))


def train_loop(solver, cfg, run_dir, manifest, scorer, stop, steps):
    """Step to cfg.max_iter, testing and snapshotting at their intervals; returns how it ended.
    Each step's time goes to ``steps`` (a StepTimes)."""
    start_wall, wall0 = time.time(), manifest["wall_time_s"]
    manifest.pop("diverged_at", None)  # a resumed run is judged afresh
    losses = []
    bar = tqdm(total=cfg.max_iter, initial=solver.iter, unit="it",
               desc=f"{manifest['dataset']} {manifest['act']} {manifest['solver']}",
               **progress_style())
    try:
        while solver.iter < cfg.max_iter and stop.signum is None:
            caffe.set_random_seed(iteration_seed(cfg.random_seed, solver.iter))
            step_start = time.perf_counter()
            solver.step(1)
            losses.append(float(solver.net.blobs["loss"].data))
            steps.add(step_start)
            it = solver.iter
            if not math.isfinite(losses[-1]):  # the weights are NaN/inf now: nothing more to learn
                manifest["diverged_at"] = it
                break
            manifest["iterations_done"] = it
            manifest["wall_time_s"] = wall0 + time.time() - start_wall
            if cfg.is_test_point(it):
                started = time.time()
                result = scorer.score(solver.net)
                test_s = time.time() - started  # counted apart: the step's speed is reported without it
                manifest["test_time_s"] = manifest.get("test_time_s", 0.0) + test_s
                manifest["tests"].append({"iter": it, "loss": float(np.mean(losses)), **result,
                                          "wall_time_s": round(manifest["wall_time_s"], 1),
                                          "test_s": round(test_s, 2)})
                manifest["wall_time_s"] = wall0 + time.time() - start_wall  # the test's time too
                losses = []
                bar.set_postfix(loss=f"{manifest['tests'][-1]['loss']:.3g}", psnr=f"{result['psnr']:.2f}")
            if it % cfg.snapshot == 0 or it == cfg.max_iter:
                snapshot(solver, run_dir, manifest)
            if cfg.is_test_point(it) or it % cfg.snapshot == 0:
                save_manifest(run_dir, manifest)
            bar.update(1)
    finally:  # before any error line: a bar closed later would print after it
        bar.close()
    if "diverged_at" in manifest:
        return "diverged"
    return "done" if solver.iter >= cfg.max_iter else "interrupted"


def manifest_loss(solver):
    """The current batch loss as text (nan, inf)."""
    return f"{float(solver.net.blobs['loss'].data):g}"


def make_solver(manifest, cfg, data_dir, restore, run_dir):
    """The pycaffe solver (on the device use_device chose), restored from a checked snapshot and
    with its data layer where an uninterrupted run's would be."""
    solver = caffe.get_solver(str(run_path(run_dir, manifest["files"]["solver"], "solver")))
    if restore:
        caffemodel, state = snapshots.pair_paths(run_dir, restore)
        try:
            snapshots.check(solver.net, solver_type(manifest), restore["iter"], caffemodel, state)
        except snapshots.SnapshotError as exc:
            raise TrainError(unusable(exc, solver, manifest, run_dir, restore)) from None
        snapshots.point_state_at(state, caffemodel)
        solver.restore(str(state))
        advance_data_layer(solver, solver.iter % data_period(data_dir, cfg.batch_train))
    return solver


def unusable(error, solver, manifest, run_dir, restore):
    """The line for a snapshot that failed its check: which, why, and the one to fall back to."""
    earlier = [s for s in manifest["snapshots"] if s["iter"] < restore["iter"]]
    good = snapshots.newest_good(solver.net, solver_type(manifest), run_dir, earlier)
    fallback = (f"the last good snapshot is of iteration {good['iter']}: add --resume-from {good['iter']} "
                f"(make: RESUME_FROM={good['iter']})"
                if good else "no earlier snapshot is usable: use --force (make: FORCE=1) to start over")
    return f"the snapshot of iteration {restore['iter']} is unusable: {error}; {fallback}"


def train_run(args, cfg, data_dir, run_dir, device):
    """The run, once its directory is this process's alone; the exit status."""
    for field in (args.user_solver.kept if args.user_solver else ()):
        print(f"train: {args.solver_file}: {field} is the harness's own (not taken from the file)")
    manifest, restore = prepare_run(args, cfg, data_dir, run_dir)
    if manifest is None:
        print(f"train: {run_dir} is finished ({cfg.max_iter} iterations); nothing to do")
        return 0
    manifest["device"] = "CPU" if device is None else f"GPU {device}"
    stop = StopRequest()
    solver = make_solver(manifest, cfg, data_dir, restore, run_dir)
    record_machine(manifest, solver.iter)
    scorer = ImageScorer(data_dir, run_path(run_dir, manifest["files"]["deploy"], "deploy"), cfg)
    manifest["bicubic"] = scorer.bicubic
    steps = StepTimes()
    try:
        status = train_loop(solver, cfg, run_dir, manifest, scorer, stop, steps)
        manifest["step_time"] = steps.summary()  # this process's steps (a resumed run's last part)
        if status != "diverged":  # a diverged net's weights are not worth a snapshot
            snapshot(solver, run_dir, manifest)
    except snapshots.SnapshotError as exc:  # the disk is full: keep what was whole
        manifest["status"], manifest["stopped"] = "stopped", now()
        save_manifest(run_dir, manifest)
        raise TrainError(f"{exc} (the run stopped at iteration {solver.iter}; its last snapshot "
                         f"is of iteration {manifest['snapshots'][-1]['iter'] if manifest['snapshots'] else 'none'})")
    manifest["status"] = status
    manifest["finished" if status == "done" else "stopped"] = now()
    save_manifest(run_dir, manifest)
    if status == "interrupted":
        name = signal.Signals(stop.signum).name
        print(f"train: {name} at iteration {solver.iter}: snapshot and manifest saved in {run_dir}; "
              f"continue with --resume (make: RESUME=1)")
        return 128 + stop.signum
    if status == "diverged":
        good = manifest["snapshots"][-1]["iter"] if manifest["snapshots"] else None
        print(f"train: error: the loss is {manifest_loss(solver)} at iteration {solver.iter}: the run "
              f"diverged (lower base_lr?); "
              f"{'no snapshot was written' if good is None else f'its last snapshot is of iteration {good}'}"
              f"; manifest: {run_dir / 'manifest.json'}", file=sys.stderr)
        return 1
    last = manifest["tests"][-1] if manifest["tests"] else {}
    print(f"train: done, {solver.iter} iterations, test PSNR {last.get('psnr', float('nan')):.2f} dB "
          f"({scorer.baseline} {scorer.bicubic['psnr']:.2f}); {step_ms(manifest):.1f} ms/iteration without the "
          f"periodic tests ({manifest.get('test_time_s', 0.0):.1f} s), median step "
          f"{manifest['step_time'].get('median_ms', float('nan')):.1f} ms; manifest: {run_dir / 'manifest.json'}")
    return 0
