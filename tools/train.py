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

This file is the command line and its checks; the run directory's life (fresh, resumed, taken up
after a failure) is tools/train_run_dir.py, the loop tools/train_loop.py, the progress bar and
step timing tools/train_progress.py.
"""
if __name__ == "__main__":
    from core.cli import exit_quietly_until_main
    exit_quietly_until_main()  # Ctrl-C while Caffe and OpenCV load: no traceback (core.cli)
    from tools.supervisor import supervise_unless_supervised
    supervise_unless_supervised("tools.train")  # the parent waits here for its trainer child

import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")  # Caffe's INFO logs would drown the progress bar

import caffe  # noqa: E402

from core.config import ACTIVATIONS, SOLVERS, ConfigError, check_name, dataset_config  # noqa: E402
from core.solvers import check_solver  # noqa: E402
from core.args import command_line  # noqa: E402
from core.cli import guarded  # noqa: E402
from core.data_files import DATA_ROOT, built, is_built  # noqa: E402
from core.data_files import data_dir as data_dir_of  # noqa: E402
from core.device import use_device  # noqa: E402
from core.names import parse_run  # noqa: E402
from core.user_solver import read_solver_file  # noqa: E402
from core.errors import DataError  # noqa: E402
from core.locks import exclusive, lock_beside  # noqa: E402
from core.run_files import default_run_dir  # noqa: E402
from tools.supervisor import report_run_dir  # noqa: E402
from tools.train_loop import train_run  # noqa: E402
from tools.train_run_dir import TrainError, record_error  # noqa: E402


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
