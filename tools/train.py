"""`make train` / `python -m tools.train`: train one SRCNN run with progress, periodic full-image
test PSNR/SSIM, snapshots, a manifest, and exact resume.

    python -m tools.train --dataset prostate --act rrelu --solver nesterov [--iters N]
                          [--run-dir DIR] [--resume] [--force] [KEY=VALUE ...]

Exact resume: Caffe's .solverstate keeps weights, momentum and the iteration, but neither the
HDF5Data layer's position nor Caffe's random generator (RReLU's draws). So every iteration reseeds
Caffe's generator from (random_seed, iteration), and a resumed run first advances the data layer
alone by the batches already consumed: the resumed run ends with the same bytes as an
uninterrupted one (on the CPU).

From the command line the trainer runs in a child process that this one waits for
(tools/supervisor.py): a Caffe abort or another signal that kills it leaves its run `failed`, with
the reason, and a rerun of the same command (`make train` passes neither --resume nor --force)
resumes a failed run from its last snapshot, or starts it over when it has none or its config or
solver file changed, and says which.
"""
if __name__ == "__main__":
    from core.cli import exit_quietly_until_main
    exit_quietly_until_main()  # Ctrl-C while Caffe and OpenCV load: no traceback (core.cli)
    from tools.supervisor import supervise_unless_supervised
    supervise_unless_supervised("tools.train")  # the parent waits here for its trainer child

import collections
import json
import math
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")  # Caffe's INFO logs would drown the progress bar

import caffe  # noqa: E402
import h5py  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from core.config import (BUILD_ONLY_KEYS, ROOT, ConfigError, check_name, dataset_config,  # noqa: E402
                         ACTIVATIONS, SOLVERS, with_added_keys)
from core.solvers import check_solver  # noqa: E402
from core.args import command_line  # noqa: E402
from core.cli import guarded, os_error_line  # noqa: E402
from core.data_files import DATA_ROOT, built, is_built, list_file  # noqa: E402
from core.data_files import data_dir as data_dir_of  # noqa: E402
from core.device import use_device  # noqa: E402
from core.names import parse_run  # noqa: E402
from core.user_solver import read_solver_file  # noqa: E402
from core.errors import DataError  # noqa: E402
from core.locks import exclusive, lock_beside  # noqa: E402
from data_prep.shuffle import train_list  # noqa: E402
from core.run_files import (default_run_dir, nets_here, new_manifest, now, only_generated,  # noqa: E402
                             read_manifest, record_machine, relative_to_run, run_path, save_manifest,
                             write_run_nets)
from core.run_status import FAILED, RUNNING, last_failure, mark_failed  # noqa: E402
from tools import snapshots  # noqa: E402
from tools.supervisor import report_run_dir  # noqa: E402
from tools.periodic_test import ImageScorer  # noqa: E402


class TrainError(Exception):
    """A user mistake or an unusable run directory: one line for the user."""


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


class StepTimes:
    """Milliseconds of each training step of this process, timed as `make bench` times its steps
    (solver.step(1) and reading the loss): the manifest gets their median, the figure the bench
    reports. The run's ms/iteration is a mean over wall time, which this machine's scheduling
    noise drags above the median; only the most recent ``keep`` steps are kept."""

    def __init__(self, keep=100_000):
        self.times = collections.deque(maxlen=keep)

    def add(self, start):
        self.times.append((time.perf_counter() - start) * 1000.0)

    def summary(self):
        """{"median_ms", "mean_ms", "steps"} of the steps kept, or {} before the first."""
        if not self.times:
            return {}
        return {"median_ms": round(statistics.median(self.times), 3),
                "mean_ms": round(statistics.fmean(self.times), 3), "steps": len(self.times)}


class LineWriter:
    """A file for tqdm that turns each redraw into a line of its own: in a log file (Slurm, nohup)
    the redraws would otherwise be one line joined by carriage returns, and on a terminal that
    several runs share (``make -j2 grid``) they would overwrite one another."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        text = text.strip("\r\n")
        if text.strip():
            self.stream.write(text + "\n")

    def flush(self):
        self.stream.flush()


def progress_style(env=None, stream=None):
    """tqdm keywords for the training bar. On a terminal of its own it redraws in place 10 times
    a second; ``MEDSR_PROGRESS=lines`` (set by `make reproduce` for its parallel runs) or a stream
    that is not a terminal gets one line a minute (or every ``MEDSR_PROGRESS_S`` seconds), or a
    days-long run's log grows by ~1 KB/s."""
    env = os.environ if env is None else env
    stream = sys.stderr if stream is None else stream
    if env.get("MEDSR_PROGRESS", "bar") != "lines" and stream.isatty():
        return {"dynamic_ncols": True, "mininterval": 0.1}
    return {"file": LineWriter(stream), "ncols": 100,
            "mininterval": float(env.get("MEDSR_PROGRESS_S", 60))}


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


def step_ms(manifest):
    """Milliseconds per iteration over the whole run (resumed parts included), periodic tests left
    out; the manifest's wall time holds both."""
    steps = max(manifest["iterations_done"], 1)
    return 1000.0 * (manifest["wall_time_s"] - manifest.get("test_time_s", 0.0)) / steps


def parse_args(argv):
    p = command_line("tools.train", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", help="a data set under data/ (make data)")
    p.add_argument("--act", help=f"{', '.join(ACTIVATIONS)}")
    p.add_argument("--solver", help=f"{', '.join(SOLVERS)}")
    p.add_argument("--solver-file", type=Path, metavar="PROTOTXT",
                   help="your own solver prototxt as the solver (core/user_solver.py): its "
                        "optimisation fields, the run named <act>_<file's stem>")
    p.add_argument("--grid-run", metavar="DATASET-ACT-SOLVER-SEED",
                   help="one run of make grid by its name: sets the four (core.names.grid_runs)")
    p.add_argument("--grid-solver-file", type=Path, action="append", default=[], metavar="PROTOTXT",
                   help="make grid SOLVER_FILES=: a solver file that --solver (or --grid-run's "
                        "solver) may name by its stem (repeatable)")
    p.add_argument("--iters", type=int, help="iterations (overrides max_iter)")
    p.add_argument("--seed", type=int, default=0, help="repeat K: adds K to random_seed (weights, "
                   "RReLU draws) and data_seed (training patch order); default 0")
    p.add_argument("--run-dir", type=Path, help="default runs/<dataset>/<act>_<solver>/seed<k>")
    p.add_argument("--data-root", type=Path, default=DATA_ROOT, help="where data sets are")
    p.add_argument("--resume", action="store_true", help="continue from the latest snapshot "
                   "(starts the run if it does not exist; a finished run is left as it is)")
    p.add_argument("--resume-from", type=int, metavar="ITER", help="with --resume: continue from the "
                   "snapshot of iteration ITER (the manifest's later tests and snapshots are dropped)")
    p.add_argument("--force", action="store_true", help="replace an existing run directory")
    p.add_argument("--gpu", type=int, metavar="N", help="train on GPU N (sets solver_mode=GPU; a "
                   "CUDA build: make setup GPU=1); default: the config's solver_mode, GPU 0")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    args = p.parse_args(argv)
    args.user_solver = None  # read in resolve(): a bad file is one line, not a usage message
    if args.solver_file is not None:
        if args.solver is not None:
            p.error("--solver-file is the solver: give --solver or --solver-file, not both")
        args.solver = args.solver_file.stem
    if args.grid_run is not None:
        try:
            args.dataset, args.act, args.solver, args.seed = parse_run(args.grid_run)
        except ConfigError as e:
            p.error(str(e))
    named = [f for f in args.grid_solver_file if f.stem == args.solver]
    if named and args.solver_file is None:  # a grid's run names its solver file by the stem
        args.solver_file = named[0]
    missing = [f"--{k}" for k in ("dataset", "act", "solver") if getattr(args, k) is None]
    if missing:
        p.error(f"the following arguments are required: {', '.join(missing)} (or --grid-run)")
    return args


def resolve(args):
    """Checked names, config and paths, or TrainError/ConfigError with one line."""
    check_name("activation", args.act)
    if args.solver_file is not None:
        args.user_solver = read_solver_file(args.solver_file)
    else:
        check_name("solver", args.solver)
    data_dir = data_dir_of(args.dataset, args.data_root)
    if not is_built(data_dir):
        known = built(args.data_root)
        raise TrainError(f"no data set {args.dataset!r} in {args.data_root} (built: "
                         f"{', '.join(known) or 'none'}; run `make data`)")
    if args.iters is not None and args.iters <= 0:
        raise TrainError(f"--iters must be positive, got {args.iters}")
    iters = args.iters
    if iters is None and args.user_solver is not None and args.user_solver.param.HasField("max_iter"):
        iters = args.user_solver.param.max_iter  # the file's schedule, unless --iters says otherwise
    overrides = list(args.overrides) + ([f"max_iter={iters}"] if iters is not None else [])
    overrides += ["solver_mode=GPU"] if args.gpu is not None else []
    cfg = dataset_config(args.dataset, overrides, solver=args.solver)
    if args.seed < 0:
        raise TrainError(f"--seed must be >= 0, got {args.seed}")
    cfg = cfg.with_overrides([f"random_seed={cfg.random_seed + args.seed}",
                              f"data_seed={cfg.data_seed + args.seed}"])
    if args.user_solver is not None:  # the file over the harness's fields, as Caffe will get it
        args.user_solver.check(cfg, args.solver_file)
    else:
        check_solver(cfg, args.solver)
    if args.act == "rrelu" and cfg.rrelu_layer == "fused" and "RReLU" not in caffe.layer_type_list():
        raise TrainError("this Caffe has no RReLU layer (tools/setup/patches/0010, built by make "
                         "setup): use rrelu_layer=graph")
    if cfg.act_layer == "auto":  # conv only where check_conv_activation accepts it
        cfg = cfg.with_overrides([f"act_layer={auto_act_layer(args.act, cfg)}"])
    elif cfg.act_layer == "conv":
        check_conv_activation(args.act, cfg)
    run_dir = args.run_dir or default_run_dir(args.dataset, args.act, args.solver, args.seed)
    return cfg, data_dir, Path(run_dir).resolve()


def auto_act_layer(act, cfg):
    """act_layer=auto: "conv" where act_layer=conv would be accepted (this Caffe has patch 0011,
    the net trains on the CPU, ``act`` can go inside the convolution), else "separate". Either
    gives the same numbers."""
    try:
        check_conv_activation(act, cfg.with_overrides(["act_layer=conv"]))
    except (TrainError, ConfigError):
        return "separate"
    return "conv"


def check_conv_activation(act, cfg):
    """act_layer=conv needs our Caffe's patch 0011 and an activation it has."""
    from core.nets import conv_activation_fields, conv_activation_supported

    if not conv_activation_supported():
        raise TrainError("this Caffe cannot apply activations inside convolutions "
                         "(tools/setup/patches/0011, built by make setup): use act_layer=separate")
    try:
        conv_activation_fields(act, cfg)
    except ValueError as exc:
        raise TrainError(str(exc))


def comparable(config):
    """The config fields that must match to resume a run (max_iter may grow, and the build-only keys
    may change, core.config.BUILD_ONLY_KEYS; keys the run predates count at the value it was
    trained with, core.config.ADDED_KEYS)."""
    return {k: v for k, v in json.loads(json.dumps(with_added_keys(config))).items()
            if k != "max_iter" and k not in BUILD_ONLY_KEYS}


def build_changed(config, cfg):
    """True when a run's recorded config builds its nets otherwise than ``cfg`` does."""
    old = with_added_keys(config)
    return any(old[k] != getattr(cfg, k) for k in BUILD_ONLY_KEYS)


# Why a manifest says "running" when the trainer that takes its lock finds it so: no process held
# the lock, so its trainer died with its supervisor (tools/supervisor.py), or without one
DIED_UNSEEN = "its trainer stopped without a word: killed, or the machine went down"


def prepare_run(args, cfg, data_dir, run_dir):
    """(manifest, snapshot to restore or None) for a new, forced or resumed run, or a failed one
    taken up again (after_failure); None, None when a resumed run is already finished. Called
    holding the run's lock."""
    old = read_manifest(run_dir)
    if run_dir.exists() and old is None and not only_generated(run_dir):
        raise TrainError(f"{run_dir} is not a run directory (no manifest.json) and holds other files: "
                         "not replacing it; choose another --run-dir")
    if old is not None and old.get("status") == RUNNING:  # and this process holds its lock
        mark_failed(run_dir, old, DIED_UNSEEN)
    if old is not None and old.get("status") == FAILED and not args.force and args.resume_from is None:
        return after_failure(args, cfg, data_dir, run_dir, old)
    if old is not None and not (args.force or args.resume):
        raise TrainError(f"{run_dir} exists: add --resume (make: RESUME=1) to continue it or --force "
                         "(make: FORCE=1) to replace it")
    if args.resume and old is not None:
        change = recipe_change(args, cfg, old)
        if change is not None:
            kept = "its text is in the manifest; " if "solver file" in change else ""
            raise TrainError(f"{run_dir} was trained with {change}: {kept}use --force (make: FORCE=1) "
                             "for a new run")
        if args.resume_from is None and old["iterations_done"] >= cfg.max_iter and old["status"] == "done":
            return None, None
        if old["snapshots"]:
            return resumed(args, cfg, data_dir, run_dir, old)
    if args.resume_from is not None:
        raise TrainError(f"{run_dir} has no snapshot to resume from")
    return fresh(args, cfg, data_dir, run_dir), None


def recipe_change(args, cfg, old):
    """What differs between the run's manifest ``old`` and this command that forbids resuming it
    ("another config", "another solver file (or none)"), or None."""
    if comparable(old["config"]) != comparable(cfg.as_dict()):
        return "another config"
    recorded = (old.get("solver_file") or {}).get("sha256")
    if recorded != (args.user_solver.sha256 if args.user_solver else None):
        return "another solver file (or none)"
    return None


def after_failure(args, cfg, data_dir, run_dir, old):
    """A failed run, taken up by the same command with no flag (make train passes neither --resume
    nor --force): resumed from its last snapshot when its config and solver file are this
    command's, else started over (a run that failed has nothing to finish); one line says which."""
    said = f"train: {run_dir} failed after iteration {old['iterations_done']} ({last_failure(old)})"
    change = recipe_change(args, cfg, old)
    if change is None and old["snapshots"]:
        manifest, restore = resumed(args, cfg, data_dir, run_dir, old)
        print(f"{said}: resuming it from its snapshot of iteration {restore['iter']}")
        return manifest, restore
    why = f"it was trained with {change}" if change else "it has no snapshot"
    print(f"{said}: starting it over ({why})")
    return fresh(args, cfg, data_dir, run_dir), None


def chosen_snapshot(manifest, resume_from, run_dir):
    """The manifest's last snapshot, or the one of iteration ``resume_from``."""
    if resume_from is None:
        return manifest["snapshots"][-1]
    for snap in manifest["snapshots"]:
        if snap["iter"] == resume_from:
            return snap
    listed = ", ".join(str(s["iter"]) for s in manifest["snapshots"])
    raise TrainError(f"{run_dir} has no snapshot of iteration {resume_from} (it has: {listed})")


def resumed(args, cfg, data_dir, run_dir, old):
    """The manifest of a run continued from its last snapshot (or --resume-from's), with the
    tests and snapshots after it dropped and its nets written for here where need be: a copied
    or moved directory's solver names the original's paths, and a build-only key may change."""
    last = chosen_snapshot(old, args.resume_from, run_dir)
    old["tests"] = [t for t in old["tests"] if t["iter"] <= last["iter"]]
    old["snapshots"] = [s for s in old["snapshots"] if s["iter"] <= last["iter"]]
    old["iterations_done"] = min(old["iterations_done"], last["iter"])
    rebuild = build_changed(old["config"], cfg) or old.get("data") != str(data_dir.resolve())
    here = nets_here(run_dir, old)
    if not here and old.get("files"):
        print(f"train: {run_dir}: its nets name another directory or are missing (a copy, a move or an "
              f"older run): written anew for this one")
    old["config"], old["status"] = cfg.as_dict(), "running"
    if rebuild or not here:
        files = write_run_nets(run_dir, cfg, args.dataset, args.act, args.user_solver or args.solver, data_dir,
                               train_list(data_dir, cfg.data_seed))
        old["files"] = {k: relative_to_run(run_dir, v) for k, v in files.items()}
        old["data"] = str(data_dir.resolve())
    return old, last


def fresh(args, cfg, data_dir, run_dir):
    """A new run directory with its nets and first manifest, or none at all if that fails."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    try:
        files = write_run_nets(run_dir, cfg, args.dataset, args.act, args.user_solver or args.solver, data_dir,
                               train_list(data_dir, cfg.data_seed))
        manifest = new_manifest(cfg, args.dataset, args.act, args.solver,
                                {k: relative_to_run(run_dir, v) for k, v in files.items()}, data_dir,
                                args.seed)
        if args.user_solver is not None:
            manifest["solver_file"] = args.user_solver.record(args.solver_file)
        save_manifest(run_dir, manifest)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # nothing half-made that would block a rerun
        raise
    return manifest


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


def run(args):
    cfg, data_dir, run_dir = resolve(args)
    # Checked before the run directory is touched: Caffe aborts on a GPU it cannot use.
    device = None if cfg.solver_mode == "CPU" else (args.gpu or 0)
    use_device(device)
    what = f"train --dataset {args.dataset} --act {args.act} --solver {args.solver} --seed {args.seed}"
    with exclusive(lock_beside(run_dir), what, run_dir):  # one trainer per run directory
        report_run_dir(run_dir)  # to the supervising parent: the run to mark failed if this one dies
        try:
            return train_run(args, cfg, data_dir, run_dir, device)
        except BaseException as exc:  # the line comes from guarded(); the manifest says it too
            record_error(run_dir, exc)
            raise


def record_error(run_dir, exc):
    """Mark the run failed, with ``exc`` as the reason, when an error ends this trainer while its
    manifest says it trains (an unreadable data file, a snapshot that fails its check)."""
    manifest = read_manifest(run_dir)
    if manifest is None or manifest.get("status") != RUNNING:
        return
    if isinstance(exc, OSError):
        reason = os_error_line(exc)
    elif isinstance(exc, (TrainError, ConfigError, DataError)):
        reason = str(exc)
    else:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    try:
        mark_failed(run_dir, manifest, " ".join(reason.split()))
    except OSError:  # the disk that failed the run: the next trainer finds it "running" and says so
        pass


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


def main(argv=None):
    args = parse_args(argv)
    if args.resume_from is not None and not args.resume:
        print("train: error: --resume-from needs --resume", file=sys.stderr)
        return 2
    # An interrupt before training starts leaves nothing half-made (fresh()); once it runs, the
    # loop's own handler snapshots first (StopRequest)
    return guarded("train", lambda: run(args), (TrainError, ConfigError, DataError))


if __name__ == "__main__":
    sys.exit(main())
